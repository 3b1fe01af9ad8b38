"""trainer: the thin, real trainer that runs any order of D, P, Q, E and records what it measured.

Imports torch (unlike ``bitops`` and ``simulator``); ``simulator`` imports it only inside the
``train``, ``profile`` and ``confirm`` commands.
"""
