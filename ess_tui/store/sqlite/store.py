"""``SQLiteStore``: the ESS latch, policy keys, audit chain and runner lease in one SQLite file."""

from __future__ import annotations

from ess_tui.store.sqlite.audit import AuditMixin
from ess_tui.store.sqlite.lease import LeaseMixin
from ess_tui.store.sqlite.policy import PolicyMixin
from ess_tui.store.sqlite.scopes import ScopesMixin


class SQLiteStore(ScopesMixin, PolicyMixin, AuditMixin, LeaseMixin):
    """The ESS's durable state in one SQLite file (0o600).

    Constructing it does no I/O. ``create=True`` (the default, for the runner, ``activate`` and
    the seed's style of use) makes a new database only where no file exists at all; an existing
    file, whatever its size or content, is never initialised. ``create=False`` is for tools that
    only look: a missing file is then ``StoreUnavailable``. An existing file that is not a sound
    ESS database is ``StoreUnavailable`` and left byte for byte as it was.

    Operations run one at a time on the store's own database thread; a write started is
    finished even if its caller is cancelled. Every latch writes its marker beside the file
    first (the second channel every gate reads) and, after its commit, checkpoints the WAL into
    the main file. ``audit_key`` defaults to ``QT_ESS_AUDIT_KEY`` from the environment;
    ``monotonic`` is the clock lease expiry is judged by (tests step it).
    """
