"""``fanout plugins``: installed plugins, their providers, and what each one still needs."""

from __future__ import annotations

import json
from typing import Any

import click

from .. import _config
from .._exceptions import ConfigError
from .._setup import load_client_registry, select_providers
from ._common import mask, setting_source


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins_command(as_json: bool) -> None:
    """List plugins, their providers, enabled or not, and missing settings (secrets masked)."""
    env = _config.environ()
    options = _config.ClientOptions.resolve(env, {})
    registry = load_client_registry(options)
    try:
        enabled_names = set(select_providers(registry, env, options.providers))
    except ConfigError as exc:  # unknown names in FANOUT_PROVIDERS: list what is there
        click.echo(f"warning: {exc}", err=True)
        enabled_names = set(options.providers or ())
    rows: list[dict[str, Any]] = []
    instances = [registry.spec(n) for n in sorted(enabled_names) if ":" in n]
    for spec in [*registry.providers.values(), *instances]:
        missing = [s.env_names(spec.name)[0] for s in _config.missing_settings(spec, env)]
        enabled = spec.name in enabled_names
        settings = []
        for s in spec.settings:
            source = setting_source(spec, s, env)
            value = env.get(source, "") if source else (s.default or "")
            settings.append(
                {
                    "field": s.field,
                    "env": list(s.env_names(spec.name)),
                    "required": s.required,
                    "secret": s.secret,
                    "set_by": source,
                    "value": mask(value) if s.secret else value,
                }
            )
        rows.append(
            {
                "provider": spec.name,
                "plugin": spec.plugin,
                "enabled": enabled,
                "missing": missing,
                "kinds": sorted(spec.kinds),
                "capabilities": sorted(spec.capabilities),
                "settings": settings,
                "description": spec.description,
            }
        )
    plugins = [
        {
            "name": p.name,
            "distribution": p.distribution,
            "version": p.version,
            "loaded": p.loaded,
            "error": p.error,
            "providers": p.providers,
        }
        for p in registry.plugins
    ]
    if as_json:
        click.echo(json.dumps({"plugins": plugins, "providers": rows}, indent=2))
        return
    click.echo("Plugins:")
    for p in plugins:
        dist = f"{p['distribution']} {p['version'] or ''}".strip() if p["distribution"] else "-"
        state = "loaded" if p["loaded"] else f"NOT LOADED ({p['error']})"
        click.echo(f"  {p['name']:<16} {dist:<28} {state}")
    click.echo("")
    click.echo("Providers:")
    for r in rows:
        mark = "enabled " if r["enabled"] else "disabled"
        click.echo(f"  {r['provider']:<12} {mark}  from {r['plugin']}  {r['description']}")
        for s in r["settings"]:
            flag = " (secret)" if s["secret"] else ""
            where = (
                f"= {s['value']!s}  [{s['set_by'] or 'default'}]"
                if s["set_by"] or s["value"]
                else "not set"
            )
            req = "required" if s["required"] else "optional"
            click.echo(f"      {s['env'][0]:<32} {req}{flag}  {where}")
        if r["missing"]:
            click.echo(f"      missing: {', '.join(r['missing'])}")
    for conflict, owners in registry.conflicts.items():
        click.echo(f"warning: provider {conflict!r} registered by {', '.join(owners)}", err=True)
