"""x-ratelimit-* and Retry-After headers, named as OpenAI names them so clients already understand them."""

from __future__ import annotations

from quotagate.limits.model import Decision, LimitKind, Remaining


def _tightest(remaining: tuple[Remaining, ...], limit: str, left: str) -> tuple[int, int] | None:
    pairs = [(getattr(r, limit), getattr(r, left)) for r in remaining if getattr(r, limit) is not None]
    if not pairs:
        return None
    return min(pairs, key=lambda p: p[1])


def tightest_remaining(decision: Decision) -> tuple[int | None, int | None]:
    """(requests, tokens) left in the tightest scope after this request; None where no such limit applies."""
    req = _tightest(decision.remaining, "rpm_limit", "rpm_remaining")
    tok = _tightest(decision.remaining, "tpm_limit", "tpm_remaining")
    return (max(req[1], 0) if req else None), (max(tok[1], 0) if tok else None)


def remaining_headers(decision: Decision) -> tuple[tuple[str, str], ...]:
    headers: list[tuple[str, str]] = []
    reset = f"{decision.window_reset_s}s"
    for name, limit, left in (("requests", "rpm_limit", "rpm_remaining"), ("tokens", "tpm_limit", "tpm_remaining")):
        pair = _tightest(decision.remaining, limit, left)
        if pair is not None:
            headers += [
                (f"x-ratelimit-limit-{name}", str(pair[0])),
                (f"x-ratelimit-remaining-{name}", str(max(pair[1], 0))),
                (f"x-ratelimit-reset-{name}", reset),
            ]
    return tuple(headers)


def denial_headers(decision: Decision) -> tuple[tuple[str, str], ...]:
    headers = list(remaining_headers(decision))
    denial = decision.denial
    if denial is None:
        return tuple(headers)
    if denial.retry_after_s is not None:
        headers.append(("retry-after", str(max(denial.retry_after_s, 1))))
    names = {LimitKind.RPM: "requests", LimitKind.TPM: "tokens"}
    if denial.kind in names:
        name = names[denial.kind]
        # The refusing scope is the one the client must wait for, whatever the others say.
        headers = [h for h in headers if not h[0].endswith(f"-{name}")]
        headers += [
            (f"x-ratelimit-limit-{name}", str(denial.limit)),
            (f"x-ratelimit-remaining-{name}", str(max(denial.remaining, 0))),
            (f"x-ratelimit-reset-{name}", f"{denial.retry_after_s or decision.window_reset_s}s"),
        ]
    return tuple(headers)
