"""The control room's keys: the drill bindings (from the one drills table) and the help rows."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from textual.binding import Binding, BindingType

from ess_tui.runtime.drills import DRILL_TABLE

#: Actions that only work on the dashboard: inert inside modals and the reset wizard, so a key
#: typed there (with a button focused) can never fire a drill or open another screen.
DASHBOARD_ONLY = frozenset({"drill", "audit", "help", "change_theme", "reset", "toggle_log"})


def drill_bindings() -> list[BindingType]:
    """One binding per drill, keyed and worded from :data:`DRILL_TABLE`."""
    return [
        Binding(d.key, f"drill('{d.name}')", f"Drill: {d.what}", id=f"drill-{d.name}", show=False,
                tooltip=f"Drill: {d.what} (audited as a drill)")
        for d in DRILL_TABLE
    ]


def binding_ids(owners: Iterable[type]) -> set[str]:
    """Every binding id of ``owners`` (the classes whose ``BINDINGS`` ``tui.keys`` may remap)."""
    ids: set[str] = set()
    for owner in owners:
        for binding in getattr(owner, "BINDINGS", ()):
            if isinstance(binding, Binding) and binding.id:
                ids.add(binding.id)
    return ids


def help_rows(bindings: Iterable[BindingType], keymap: Mapping[str, str], *, paper: bool,
              display: Callable[[Binding], str]) -> list[tuple[str, str, str]]:
    """(key as shown, what it does, binding id) for the help screen, ``keymap`` applied.
    ``display`` is the app's ``get_key_display``."""
    rows = []
    for binding in bindings:
        if not isinstance(binding, Binding) or not binding.id:
            continue
        if binding.id.startswith("drill-") and not paper:
            continue
        keys = keymap.get(binding.id, binding.key)
        shown = ", ".join(display(Binding(k.strip(), "")) for k in keys.split(","))
        rows.append((shown, binding.tooltip or binding.description, binding.id))
    rows.append(("ctrl+p", "Command palette (themes, keys, quit)", "—"))
    return rows
