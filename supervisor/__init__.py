"""ovpn-supervisor: keeps the OIDC VPN Manager container stack alive on a single host."""

__version__ = "0.1.0"
