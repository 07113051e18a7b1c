"""The benchmarks, one subcommand each (`scripts/bench --help`):

- `outside` (the default): the same real Synapse without the guard (twice: the A/A
  control) and with it, CPU per request as a ratio with its interval (outside.py);
- `profile SECONDS`: the guard's share of a guarded Synapse's CPU, from a sampling
  profile, by request kind (profile.py);
- `scale`: the guard's tables at 1k to 100k accounts (scale.py).

`common` holds what they share; none imports another.
"""
