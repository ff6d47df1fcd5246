"""The conversation a model call sends, built from the session's typed transcript.

A call sends the agent's system prompt, the session's last ``history_entries_max`` transcript
entries, then what the run has added so far (its user messages; the answers and steered
messages of its earlier calls). Each entry becomes one :class:`ChatMessage`, except that an
assistant's text and the tool calls right after it are one assistant message, as the model
said them.

The bound must not leave a tool call without its result, nor a result without its call: both
APIs refuse such a conversation. So a call/result group (a ``tool_calls`` entry and the
results of all its calls) that the bound cuts is dropped whole: results at the start whose
call was cut off, and a ``tool_calls`` entry whose results are not all there.
"""

from __future__ import annotations

from collections.abc import Sequence

from turngate.core.transcript import EntryKind, TranscriptItem
from turngate.providers.base import ChatMessage


def model_messages(
    system_prompt: str | None,
    history: Sequence[TranscriptItem],
    exchange: Sequence[TranscriptItem],
) -> list[ChatMessage]:
    """The messages of one model call: the system prompt (if any), the bounded ``history``
    without its partial call/result groups, then the run's own ``exchange`` so far."""
    messages = [ChatMessage("system", system_prompt)] if system_prompt else []
    messages.extend(chat_messages([*whole_groups(history), *exchange]))
    return messages


def whole_groups(items: Sequence[TranscriptItem]) -> list[TranscriptItem]:
    """``items`` without the call/result groups that are not whole (see the module
    docstring): every ``tool_calls`` entry kept is followed by one result for each of its
    calls, and every result kept follows its call."""
    kept: list[TranscriptItem] = []
    group: list[TranscriptItem] = []
    unanswered: set[str] = set()
    for item in items:
        if item.kind is EntryKind.TOOL_RESULT:
            # A result whose call is not in the open group (cut off by the bound) is dropped.
            if item.call_id in unanswered:
                unanswered.discard(item.call_id)
                group.append(item)
                if not unanswered:
                    kept.extend(group)
                    group = []
            continue
        # Anything else closes the open group; if it still lacked results, it is dropped.
        group, unanswered = [], set()
        if item.kind is EntryKind.TOOL_CALLS:
            group = [item]
            unanswered = {call.id for call in item.tool_calls}
        else:
            kept.append(item)
    return kept


def chat_messages(items: Sequence[TranscriptItem]) -> list[ChatMessage]:
    """One message per entry, the tool calls joined to the assistant text just before them."""
    messages: list[ChatMessage] = []
    for item in items:
        if item.kind is EntryKind.USER:
            messages.append(ChatMessage("user", item.text))
        elif item.kind is EntryKind.ASSISTANT:
            messages.append(ChatMessage("assistant", item.text))
        elif item.kind is EntryKind.TOOL_CALLS:
            said = messages.pop().content if _is_assistant_text(messages) else ""
            messages.append(ChatMessage("assistant", said, tool_calls=item.tool_calls))
        else:
            messages.append(_tool_message(item))
    return messages


def _is_assistant_text(messages: list[ChatMessage]) -> bool:
    """Whether the last message is an assistant's text without tool calls."""
    return bool(messages) and messages[-1].role == "assistant" and not messages[-1].tool_calls


def _tool_message(item: TranscriptItem) -> ChatMessage:
    # A tool_result item always names its call and tool (TranscriptItem checks it).
    assert item.call_id is not None
    assert item.tool_name is not None
    return ChatMessage.tool_result(item.call_id, item.tool_name, item.text, is_error=item.is_error)
