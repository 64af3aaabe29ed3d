"""Integrations with the host: frameworks, task queues, serverless handlers, metrics.

Each module sits behind its own optional extra, so the core stays small; importing this
package imports none of them.
"""
