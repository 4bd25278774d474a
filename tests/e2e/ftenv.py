"""Topology defaults shared by the e2e tools: mirror of scripts/lib.sh (env FT_* overrides)."""
import os

DEFAULTS = {
    "FT_CLIENT_NS": "ftc", "FT_SW_NS": "ftsw", "FT_A_NS": "fta", "FT_B_NS": "ftb",
    "FT_BRIDGE": "ftbr0", "FT_CLIENT_IF": "c0", "FT_A_IF": "a0", "FT_B_IF": "b0",
    "FT_CLIENT_IP": "198.18.0.2", "FT_VIP": "198.18.0.100", "FT_VIP_MAC": "02:66:74:00:00:64",
}


def get(name: str) -> str:
    """FT_* value from the environment (eval "$(scripts/topology env)"), else the default."""
    return os.environ.get(name) or DEFAULTS[name]
