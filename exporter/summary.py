"""The export summary's words: the quality gate's figures as sentences a user can judge by."""

from __future__ import annotations

from typing import Any

from .checks.gate import DEFAULT_MAX_PPL_INCREASE

# The summary calls a bundle close to fp32 when every greedy continuation is identical and at
# least this share of next-token predictions agrees (int8 and fp16 of the trained fixture: 98.9%
# and 100%; int4: 93.6%).
CLOSE_TOP1 = 0.97


def describe_quality(quality: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows for the CLI summary table, in words a user can judge the bundle by."""
    rows = []
    limit = quality.get("max_ppl_increase", DEFAULT_MAX_PPL_INCREASE)
    for key, label in (("builtin", "built-in text"), ("user_text", "--eval-text")):
        if key not in quality:
            continue
        q = quality[key]
        rows.append(
            (
                f"perplexity ({label})",
                f"{q['perplexity']:.3f} vs fp32 {q['ref_perplexity']:.3f} "
                f"({q['ppl_increase']:+.2%}; limit {limit:+.1%}), {q['tokens']} tokens",
            )
        )
        rows.append(
            (
                f"top-1 vs fp32 ({label})",
                f"{q['top1_agreement']:.2%} of positions predict the same next token",
            )
        )
        if "max_logit_diff" in q:
            rows.append(
                (
                    f"logits vs fp32 ({label})",
                    f"differ by {q['max_logit_diff']:.3g} at most, "
                    f"{q.get('mean_logit_diff', float('nan')):.3g} on average",
                )
            )
    greedy = quality.get("greedy")
    if greedy:
        rows.append(("greedy vs fp32", describe_greedy(greedy, quality)))
        rows.append(("verdict", verdict(greedy, quality.get("builtin", {}))))
    return rows


def describe_greedy(greedy: dict[str, Any], quality: dict[str, Any]) -> str:
    prompts, new_tokens = greedy["greedy_prompts"], greedy["greedy_new_tokens"]
    same = round(greedy["greedy_exact"] * prompts)
    text = (
        f"{same} of {prompts} prompts give the same {new_tokens} tokens; on average the first "
        f"{greedy['greedy_prefix_agreement']:.0%} of tokens match"
    )
    limit = quality.get("min_greedy_agreement")
    return text + (f" (limit {limit:.0%})" if limit is not None else "")


def verdict(greedy: dict[str, Any], builtin: dict[str, Any]) -> str:
    """One phrase: does this bundle write what the fp32 model writes?"""
    top1 = builtin.get("top1_agreement", 0.0)
    if greedy["greedy_exact"] >= 1.0 and top1 >= CLOSE_TOP1:
        return "close to fp32: the same greedy text on every prompt"
    if greedy["greedy_exact"] >= 1.0:
        return (
            f"near fp32: the same greedy text on every prompt, but {1 - top1:.0%} of next-token "
            "predictions differ; check it on your own prompts"
        )
    tokens = greedy["greedy_prefix_agreement"] * greedy["greedy_new_tokens"]
    return (
        f"differs from fp32: greedy text departs after about {tokens:.0f} of "
        f"{greedy['greedy_new_tokens']} tokens on average; check it on your own prompts"
    )
