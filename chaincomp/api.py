"""The one API function that is not a library entry point as it stands: :func:`count` takes flat
keyword options, as the command does, and builds the request and the counting policy from them."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from bitops.count import CountRequest, CountResult
from bitops.count import count as count_request
from bitops.errors import InputError
from bitops.policy import Policy

__all__ = ["count"]


def count(model: str, **options: Any) -> CountResult:
    """Exact BitOps / BitOpsCR / CR of ``model`` (as ``chaincomp count MODEL``).

    ``options`` are the fields of :class:`bitops.count.CountRequest` (``w_bits``, ``a_bits``,
    ``keep_ratio``, ``exits``, ``exit_probs``, ``student``, ...) and of :class:`bitops.Policy`
    (``ops``, ``bitops_formula``, ``first_last_bits``, ``input_bits``, ``bn``, ``elementwise``,
    ``nonmac_bits``, ``aux_bits``), with their defaults.
    """
    request_fields = {f.name for f in fields(CountRequest)} - {"model"}
    policy_fields = {f.name for f in fields(Policy)}
    unknown = sorted(set(options) - request_fields - policy_fields)
    if unknown:
        raise InputError(f"{unknown[0]} is not an option of count; options are "
                         f"{', '.join(sorted(request_fields | policy_fields))}")
    conventions = {k: options.pop(k) for k in list(options) if k in policy_fields}
    if "policy" in options and conventions:
        raise InputError(f"policy and {next(iter(conventions))} cannot both be given (the policy holds the conventions)")
    policy = options.pop("policy", None) or Policy(**conventions)
    return count_request(CountRequest(model=model, policy=policy, **options))
