"""Every exit code the `ovpn-supervisor` command and the daemon return, in one place.

Scripts and systemd units rely on them, so they are part of the interface: change none lightly.
"""

from __future__ import annotations

EX_OK = 0
EX_FAILURE = 1  # the daemon failed; `status`: not all up; `reload`/`update`: refused; `down` failed
EX_USAGE = 2  # a service name the config does not have (argparse uses 2 for bad usage too)
EX_UNREACHABLE = 3  # no daemon answers (the LSB "program is not running" code)
EX_REFUSED = 4  # the daemon refused the request (token, unknown service, not supervising)
EX_CONFIG = 78  # sysexits.h: configuration error; systemd must not restart-loop on it
EX_INTERRUPTED = 130  # 128 + SIGINT: a follow (`logs -f`, `events -f`) ended by Ctrl-C
