"""Docker Compose file -> ovpn-supervisor config, with a report of what the conversion did.

Handles the subset of the Compose specification that the VPN Manager's files use and that
operators commonly add. Every other key is reported by name: an error, or with `lenient` a
warning saying it was dropped; nothing is dropped without a note. A top-level
`x-ovpn-supervisor: {api, defaults}` carries our own settings (Compose ignores `x-` keys).
`${VAR}` interpolation reads the process environment first, then `.env` beside the Compose file
(or the given env file).

The output is our config as a plain dict (and YAML text), which `config.parse_config` then
validates; problems it finds are mapped back to the Compose file's lines where the key paths
agree.

The package, by concern: `interpolation` (`${VAR}` and `.env`), `report` (notes and the
result), `base` (the converter's readers), `converter` (top level), `services`, `health`
(healthcheck -> probe) and `load` (file -> import). Loading our own config never
passes through here: `supervisor.stack_file.load_stack` parses a file once and only a file
that looks like Compose is handed to this package.
"""

from supervisor.compose.interpolation import InterpolationError, interpolate, read_dotenv
from supervisor.compose.load import convert_compose, load_compose
from supervisor.compose.report import ComposeImport, ImportNote

__all__ = [
    "ComposeImport",
    "ImportNote",
    "InterpolationError",
    "convert_compose",
    "interpolate",
    "load_compose",
    "read_dotenv",
]
