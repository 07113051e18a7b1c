"""The counting engine: one `Ledger` per process, over a local or a Redis backend.

`records` names what is counted, `state` holds a key's windows, `backends` makes a
check-and-record atomic across processes, `journal` writes what was counted to the
database behind, and `ledger` ties them together behind one door: `Ledger.charge`.
"""
