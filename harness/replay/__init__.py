"""The June 2026 attack, replayed against a real Synapse without and with the guard."""
