"""The uhrops internals' name for :mod:`uhrops.checks` (the public module); kept so that the
op files keep their ``from uhrops import _checks`` while ``uhrops.checks`` is what zoo and
users import."""

from uhrops.checks import *  # noqa: F401,F403 - a re-export by design
from uhrops.checks import FLOAT_DTYPES, _RANK_FIX, _shape  # noqa: F401 - the private helpers too
