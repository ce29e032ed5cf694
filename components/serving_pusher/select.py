"""Which candidate to serve: among those the model gate blessed and infra validation passed, the one
with the best gate metric (test accuracy); ties go to the cheaper one to serve (lower infra-validation
latency, then the smaller model), then to the name. Plain Python, no TFX."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple


@dataclass(frozen=True)
class CandidateResult:
    """What the gate and the infra validator said of one candidate."""

    name: str
    model_uri: str
    model_id: int
    accuracy: Optional[float]  # the gate metric on the test split (None: the gate has no result)
    blessed: bool  # by the model gate
    infra_blessed: Optional[bool]  # None: no infra validation in this pipeline
    infra_skipped: bool = False  # not probed because the gate did not bless it
    latency_ms: Optional[float] = None  # infra validation's p50
    size_bytes: int = 0
    gate_reasons: Tuple[str, ...] = ()  # the failed checks, in words

    @property
    def eligible(self) -> bool:
        return self.blessed and self.infra_blessed is not False


@dataclass(frozen=True)
class Selection:
    chosen: Optional[CandidateResult]
    best: Optional[CandidateResult]  # the chosen one, or the best by the metric when none is eligible
    reason: str
    candidates: List[Dict[str, object]]  # per candidate: its results, status and why

    def to_dict(self) -> Dict[str, object]:
        return {"pushed_candidate": self.chosen.name if self.chosen else None,
                "best_candidate": self.best.name if self.best else None,
                "reason": self.reason, "candidates": self.candidates}


def _key(c: CandidateResult):
    return (-(c.accuracy if c.accuracy is not None else -1.0),
            c.latency_ms if c.latency_ms is not None else float("inf"), c.size_bytes, c.name)


def status(c: CandidateResult) -> str:
    """Why a candidate can or cannot be pushed, in words."""
    if not c.blessed:
        return "not blessed by the model gate" + (f": {'; '.join(c.gate_reasons)}" if c.gate_reasons else "")
    if c.infra_blessed is False:
        return "blessed, but failed infra validation"
    return "blessed" + (" and infra-validated" if c.infra_blessed else "")


def choose(results: Sequence[CandidateResult]) -> Selection:
    """The candidate to push (or None) and a report of every candidate."""
    if not results:
        raise ValueError("no candidates to choose from")
    names = [r.name for r in results]
    if len(set(names)) != len(names):
        raise ValueError(f"candidates must have distinct names, got {names}")
    ranked = sorted(results, key=_key)
    eligible = [c for c in ranked if c.eligible]
    chosen = eligible[0] if eligible else None
    best = chosen or ranked[0]
    if chosen is None:
        reason = "no candidate is both blessed and infra-validated: nothing pushed"
    else:
        others = [c for c in eligible[1:]]
        reason = f"{chosen.name}: blessed with the best test accuracy ({chosen.accuracy:.4f})"
        ties = [c for c in others if c.accuracy == chosen.accuracy]
        if ties:
            reason += (f", tied with {', '.join(c.name for c in ties)} and cheaper to serve "
                       f"(latency p50 {chosen.latency_ms} ms, {chosen.size_bytes} bytes)")
        if others:
            reason += "; also blessed: " + ", ".join(f"{c.name} ({c.accuracy:.4f})" for c in others)
    report = []
    for rank, c in enumerate(ranked, 1):
        report.append({**asdict(c), "gate_reasons": list(c.gate_reasons), "rank": rank, "status": status(c),
                       "pushed": chosen is not None and c.name == chosen.name})
    return Selection(chosen, best, reason, report)
