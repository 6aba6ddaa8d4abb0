"""`fraud serve`'s requests and answers, as pydantic models (they make its OpenAPI schema).

The decision itself is fraud/schemas.py `Decision`, the record the worker publishes."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fraud.config import ServeSettings
from fraud.errors import SchemaError
from fraud.schemas import Decision, Message, check_json_value

EXAMPLE = {
    "id": "msg-0001",
    "text": "Your parcel is held at the depot: pay the 1.99 GBP fee at royalmail-redelivery.info",
    "recipient": "+44 7700 900123",
    "metadata": {"sender": "RoyalMail", "channel": "sms"},
}


class Problem(BaseModel):
    """Why a request was refused."""

    detail: str


class ScoringProblem(Problem):
    """A message of the request could not be scored: the service's log says why under
    `error_id` (the message's text is never logged)."""

    error_id: str


class ScoreBatchResponse(BaseModel):
    """The decisions for a batch request, in the order of its messages."""

    decisions: list[Decision]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    detail: str
    model: str | None = None
    index_version: str | None = None
    references: int | None = None
    # Which scorer answers and why (fraud/scoring/detector.py, ScorerChoice): a trained head that
    # no longer matches the index is not used, and says so here.
    scorer: str | None = None
    scorer_reason: str | None = None
    scorer_detail: str | None = None
    bank: str | None = Field(
        None,
        description="the reference bank topic: 'following <topic>', or why not and since "
        "when (scoring goes on with the bank as last read); null when the index is not "
        "linked to the bank",
    )


def request_models(serve: ServeSettings) -> tuple[type[BaseModel], type[BaseModel]]:
    """The request bodies, with this service's limits in their schema."""

    class ScoreRequest(BaseModel):
        """One message to score. Unknown fields are refused: put them in `metadata`."""

        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE]})

        id: str = Field(
            min_length=1,
            max_length=256,
            description="the message's id: the decision's message_id (and Kafka key)",
        )
        text: str = Field(
            min_length=1,
            max_length=serve.max_text_chars,
            pattern=r"\S",
            description="the message text; not logged, and not copied into the decision",
        )
        recipient: str | None = Field(
            None,
            min_length=1,
            max_length=256,
            description="passed through into the decision (inline scoring does not use "
            "the recipient's history)",
        )
        metadata: dict[str, Any] | None = Field(
            None, description="anything else (sender, channel, ...): passed through"
        )

        @model_validator(mode="after")
        def _is_text(self) -> "ScoreRequest":
            # The worker's rules for a record (fraud/schemas.py): no lone surrogates, no
            # nesting deeper than its limit.
            try:
                check_json_value([self.id, self.text, self.recipient, self.metadata])
            except SchemaError as e:
                raise ValueError(e.detail) from None
            return self

        def message(self) -> Message:
            extra = {k: v for k in ("recipient", "metadata") if (v := getattr(self, k)) is not None}
            return Message(id=self.id, text=self.text, **extra)

    class ScoreBatchRequest(BaseModel):
        """Several messages to score, answered together."""

        model_config = ConfigDict(extra="forbid")

        messages: list[ScoreRequest] = Field(min_length=1, max_length=serve.max_batch_messages)

    return ScoreRequest, ScoreBatchRequest
