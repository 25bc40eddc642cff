"""The flagship pipeline: one loan or payment application -> approve / review / decline.

    raw record -> features -> fraud (ONNX) ┐
                           -> credit_score (TensorFlow) ┘ in parallel -> decision + reasons

Served as the model ``loan_decision`` (``/v2/models/loan_decision/infer``, one tensor per raw
field), at the plain JSON route ``POST /pipelines/loan_decision`` under ``infergrid serve``, and
alone with ``serve run deployments.applications.ensembles:standalone_app`` (plain JSON at ``POST /``). The feature
builders and the decision rule are plain numpy functions, so a client can reproduce a decision by
calling the two models itself (the tests do).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from backends.errors import InvalidRequest
from pipelines.base import Pipeline

__all__ = ["LoanDecision", "FIELDS", "fraud_features", "credit_features", "decide", "Decision",
           "FRAUD_DECLINE", "FRAUD_REVIEW", "CREDIT_DECLINE", "CREDIT_REVIEW"]

# Raw fields of an application record: name -> default when a JSON record leaves it out (None: required).
FIELDS: dict[str, Any] = {
    "amount": None,                 # requested / transaction amount
    "merchant_category": "other",   # e.g. "grocery", "electronics", "travel", "gambling"
    "hour": 12.0,                   # local hour of the request, 0-23
    "account_age_days": None,
    "distance_km": 0.0,             # from the applicant's home address
    "transactions_24h": 1.0,
    "annual_income": None,
    "monthly_debt": 0.0,
    "credit_history_years": 0.0,
    "credit_utilization": 0.0,      # 0..1 of revolving credit in use
    "late_payments": 0.0,           # in the last two years
}
TEXT_FIELDS = frozenset({"merchant_category"})
MERCHANT_RISK = {"grocery": -1.0, "utilities": -1.2, "restaurants": -0.5, "travel": 0.6, "electronics": 1.0,
                 "jewelry": 1.6, "gambling": 2.0, "crypto": 2.2, "other": 0.0}
FRAUD_DECLINE, FRAUD_REVIEW = 0.80, 0.40
CREDIT_DECLINE, CREDIT_REVIEW = 580.0, 670.0  # the credit model scores 0..850


def _column(record: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    return np.asarray(record[name], dtype=np.float32).reshape(-1)


def fraud_features(record: Mapping[str, np.ndarray]) -> np.ndarray:
    """The fraud model's 16 standardised features, one row per application (features 8-15, signals
    this example does not collect, sit at their population mean: 0)."""
    amount = _column(record, "amount")
    categories = np.asarray(record["merchant_category"]).reshape(-1)
    risk = np.array([MERCHANT_RISK.get(c.decode() if isinstance(c, bytes) else str(c), 0.0) for c in categories],
                    dtype=np.float32)
    hour = _column(record, "hour")
    out = np.zeros((len(amount), 16), dtype=np.float32)
    out[:, 0] = (np.log1p(np.maximum(amount, 0)) - 4.5) / 1.2
    out[:, 1] = risk
    out[:, 2] = (np.log1p(np.maximum(_column(record, "account_age_days"), 0)) - 6.0) / 1.3
    out[:, 3] = (np.abs(hour - 13.0) - 5.0) / 3.0           # night-time
    out[:, 4] = (np.log1p(np.maximum(_column(record, "distance_km"), 0)) - 2.5) / 1.5
    out[:, 5] = (_column(record, "transactions_24h") - 3.0) / 3.0
    income = np.maximum(_column(record, "annual_income"), 1.0)
    out[:, 6] = (amount / income - 0.05) / 0.1
    out[:, 7] = ((hour < 6) | (hour >= 23)).astype(np.float32)
    return out


def credit_features(record: Mapping[str, np.ndarray]) -> np.ndarray:
    """The credit model's 8 standardised features, one row per application."""
    income = np.maximum(_column(record, "annual_income"), 1.0)
    out = np.zeros((len(income), 8), dtype=np.float32)
    out[:, 0] = (np.log(income) - 10.8) / 0.6
    out[:, 1] = (12 * _column(record, "monthly_debt") / income - 0.3) / 0.15   # debt-to-income
    out[:, 2] = (_column(record, "credit_history_years") - 8.0) / 5.0
    out[:, 3] = (_column(record, "credit_utilization") - 0.3) / 0.25
    out[:, 4] = (_column(record, "late_payments") - 1.0) / 1.5
    out[:, 5] = (_column(record, "amount") / income - 0.05) / 0.1
    return out


@dataclass(frozen=True)
class Decision:
    """The answer for one application."""

    decision: str  # approve | review | decline
    fraud_probability: float
    credit_score: float
    reasons: tuple[str, ...]

    def to_json(self) -> dict:
        return {"decision": self.decision, "fraud_probability": round(self.fraud_probability, 6),
                "credit_score": round(self.credit_score, 6), "reasons": list(self.reasons)}


def decide(fraud_probability: float, credit_score: float) -> Decision:
    """The rule: the worse of the fraud verdict and the credit verdict, with the reasons for each."""
    order = ("approve", "review", "decline")
    if fraud_probability >= FRAUD_DECLINE:
        fraud = ("decline", f"fraud probability {fraud_probability:.2f} >= {FRAUD_DECLINE:.2f}")
    elif fraud_probability >= FRAUD_REVIEW:
        fraud = ("review", f"fraud probability {fraud_probability:.2f} >= {FRAUD_REVIEW:.2f}")
    else:
        fraud = ("approve", f"fraud probability {fraud_probability:.2f} < {FRAUD_REVIEW:.2f}")
    if credit_score < CREDIT_DECLINE:
        credit = ("decline", f"credit score {credit_score:.0f} < {CREDIT_DECLINE:.0f}")
    elif credit_score < CREDIT_REVIEW:
        credit = ("review", f"credit score {credit_score:.0f} < {CREDIT_REVIEW:.0f}")
    else:
        credit = ("approve", f"credit score {credit_score:.0f} >= {CREDIT_REVIEW:.0f}")
    verdict = max(fraud[0], credit[0], key=order.index)
    reasons = tuple(reason for outcome, reason in (fraud, credit) if outcome == verdict)
    return Decision(verdict, float(fraud_probability), float(credit_score), reasons)


def records_to_tensors(payload: Any) -> tuple[dict[str, np.ndarray], bool]:
    """A JSON record (or ``{"applications": [records]}``) -> one column per field; True if a list.

    Raises:
        InvalidRequest: not an object, a missing required field, or a value of the wrong type.
    """
    many = isinstance(payload, dict) and "applications" in payload
    records = payload["applications"] if many else [payload]
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        raise InvalidRequest("send one application as a JSON object, or {\"applications\": [objects]}")
    columns: dict[str, np.ndarray] = {}
    for name, default in FIELDS.items():
        values = []
        for index, record in enumerate(records):
            value = record.get(name, default)
            where = f"applications[{index}].{name}" if many else name
            if value is None:
                raise InvalidRequest(f"{where} is required")
            if name in TEXT_FIELDS:
                if not isinstance(value, str):
                    raise InvalidRequest(f"{where} must be a string, got {value!r}")
                values.append(value.encode())
            else:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                    raise InvalidRequest(f"{where} must be a finite number, got {value!r}")
                values.append(float(value))
        dtype = object if name in TEXT_FIELDS else np.float32
        columns[name] = np.array(values, dtype=dtype).reshape(-1, 1)
    unknown = sorted({k for r in records for k in r} - set(FIELDS))
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r}; fields: {', '.join(FIELDS)}")
    return columns, many


class LoanDecision(Pipeline):
    """Fraud check and credit score of each application, in parallel, then the decision."""

    members = ("fraud", "credit_score")

    async def score(self, record: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(fraud probabilities, credit scores), one per row, from the two members at once."""
        fraud, credit = await asyncio.gather(
            self.calls.call("fraud", {"features": fraud_features(record)}, step="step fraud"),
            self.calls.call("credit_score", {"applicant": credit_features(record)}, step="step credit_score"))
        return fraud["fraud_probability"].reshape(-1), credit["credit_score"].reshape(-1)

    async def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        fraud, credit = await self.score(inputs)
        decisions = [decide(float(f), float(c)) for f, c in zip(fraud, credit, strict=True)]
        return {
            "decision": np.array([[d.decision.encode()] for d in decisions], dtype=object),
            "fraud_probability": fraud.reshape(-1, 1).astype(np.float32),
            "credit_score": credit.reshape(-1, 1).astype(np.float32),
            "reasons": np.array([["; ".join(d.reasons).encode()] for d in decisions], dtype=object),
        }

    async def handle_json(self, payload: Any) -> Any:
        columns, many = records_to_tensors(payload)
        fraud, credit = await self.score(columns)
        decisions = [decide(float(f), float(c)).to_json() for f, c in zip(fraud, credit, strict=True)]
        return {"decisions": decisions} if many else decisions[0]

