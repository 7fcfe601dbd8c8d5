"""An offline Telegram: answers the Bot API methods Linli calls, keeps chat state, fails on cue.

Used by the tests and the sandbox through `build_application(..., request=FakeTelegram())`;
production never uses it. It is strict where Telegram is strict (HTML entities, 4096
characters, 64-byte callback data, who may be messaged) so that tests catch what the real
API would refuse.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import json
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from telegram import Update
from telegram._utils.defaultvalue import DEFAULT_NONE
from telegram._utils.types import ODVInput
from telegram.error import TimedOut
from telegram.request import BaseRequest, RequestData

from bot.render import utf16_length

JSON = dict[str, Any]

BOT_USER: JSON = {"id": 7000000001, "is_bot": True, "first_name": "Linli", "username": "LinliBot"}
SANDBOX_TOKEN = "7000000001:SANDBOX-offline-stand-in-token"

_ALLOWED_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre",
    "tg-spoiler", "span", "blockquote", "tg-emoji",
}  # fmt: skip
_TEXT_LIMIT = 4096
_CAPTION_LIMIT = 1024


_SEND_METHODS = frozenset({"sendMessage", "sendPhoto", "sendDocument"})


@dataclass(frozen=True)
class TelegramLimits:
    """Telegram's flood limits for messages a bot sends, as the stand-in enforces them."""

    per_second: int = 30
    chat_interval: float = 1.0
    group_per_minute: int = 20


class _Flood:
    """Telegram's flood control in miniature: over a limit, a send is answered with 429."""

    _SLACK = 1e-6  # float noise between the sender's arithmetic and ours

    def __init__(self, limits: TelegramLimits) -> None:
        self.limits = limits
        self.recent: deque[float] = deque()
        self.chat_last: dict[int, float] = {}
        self.group_recent: dict[int, deque[float]] = {}
        self.checked = 0

    def retry_after(self, chat_id: int, now: float) -> int | None:
        """Seconds to wait if this send is over a limit, else None (and the send is counted)."""
        limits, slack = self.limits, self._SLACK
        while self.recent and self.recent[0] <= now - 1.0 + slack:
            self.recent.popleft()
        waits: list[float] = []
        if len(self.recent) >= limits.per_second:
            waits.append(self.recent[0] + 1.0 - now)
        last = self.chat_last.get(chat_id)
        if last is not None and now - last < limits.chat_interval - slack:
            waits.append(last + limits.chat_interval - now)
        window = self.group_recent.get(chat_id)
        if window is not None:
            while window and window[0] <= now - 60.0 + slack:
                window.popleft()
            if len(window) >= limits.group_per_minute:
                waits.append(window[0] + 60.0 - now)
        if waits:
            return max(1, math.ceil(max(waits)))
        self.recent.append(now)
        self.chat_last[chat_id] = now
        if chat_id < 0:
            self.group_recent.setdefault(chat_id, deque()).append(now)
        self.checked += 1
        if self.checked % 1000 == 0:
            self._prune(now)
        return None

    def _prune(self, now: float) -> None:
        for chat_id in [
            c for c, t in self.chat_last.items() if t <= now - self.limits.chat_interval
        ]:
            del self.chat_last[chat_id]
        for chat_id in [c for c, w in self.group_recent.items() if not w or w[-1] <= now - 60.0]:
            del self.group_recent[chat_id]


class ApiError(Exception):
    def __init__(self, code: int, description: str, parameters: JSON | None = None) -> None:
        super().__init__(description)
        self.code, self.description, self.parameters = code, description, parameters


@dataclass
class Call:
    """One Bot API request and what the stand-in answered."""

    method: str
    params: JSON
    result: Any = None
    error: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def chat_id(self) -> int | None:
        value = self.params.get("chat_id")
        return int(value) if value is not None else None

    @property
    def text(self) -> str:
        """What a person sees: the message text or caption without markup."""
        raw = self.params.get("text") or self.params.get("caption") or ""
        return visible(str(raw))

    @property
    def buttons(self) -> list[list[JSON]]:
        markup = self.params.get("reply_markup") or {}
        return list(markup.get("inline_keyboard", [])) if isinstance(markup, dict) else []


@dataclass
class Failure:
    """An injected failure: the next matching call answers with this error (or times out)."""

    method: str | None
    chat_id: int | None
    code: int
    description: str
    parameters: JSON | None = None
    timeout: bool = False
    times: int = 1


class _EntityChecker(HTMLParser):
    """Telegram's HTML parser in miniature: known tags only, properly nested."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problem: str | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _ALLOWED_TAGS:
            self.problem = self.problem or f'unsupported start tag "{tag}"'
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problem = self.problem or f'can\'t find end tag corresponding to start tag "{tag}"'
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check_html(text: str) -> str:
    """The visible text of Telegram HTML, or ApiError 400 as Telegram would answer."""
    checker = _EntityChecker()
    checker.feed(text)
    checker.close()
    if checker.problem is None and checker.stack:
        checker.problem = f'can\'t find end tag corresponding to start tag "{checker.stack[-1]}"'
    if checker.problem:
        raise ApiError(400, f"Bad Request: can't parse entities: {checker.problem}")
    return "".join(checker.text)


def visible(text: str) -> str:
    try:
        return check_html(text)
    except ApiError:
        return html.unescape(text)


def messages(calls: list[Call], chat_id: int | None = None) -> list[Call]:
    """The messages that were really delivered among these calls (optionally to one chat)."""
    kinds = {"sendMessage", "sendPhoto", "sendDocument"}
    return [c for c in calls if c.method in kinds and c.ok and chat_id in (None, c.chat_id)]


def alerts(calls: list[Call]) -> list[str]:
    """Texts of the callback answers among these calls (pop-ups and toasts)."""
    return [str(c.params.get("text", "")) for c in calls if c.method == "answerCallbackQuery"]


class FakeTelegram(BaseRequest):
    """The Bot API, offline. State is public so tests and the sandbox can look at it."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        limits: TelegramLimits | None = None,
        transcript: bool = True,
        latency: Callable[[], float] | None = None,
    ) -> None:
        """`limits`: answer 429 with retry_after when the bot sends faster than Telegram allows
        (opt-in, timed by `clock`). `transcript=False` keeps counts only, not every call and
        message (benchmarks sending tens of thousands). `latency`: seconds each call waits
        (a real `asyncio.sleep`) before Telegram acts on it, as over a real network."""
        self.clock = clock
        self.latency = latency
        self.transcript = transcript
        self.flood = _Flood(limits) if limits is not None else None
        self.too_many = 0  # sends refused by the flood limits
        self.delivered: Counter[int] = Counter()  # messages delivered, per chat
        self.first_delivery: float | None = None
        self.last_delivery: float | None = None
        self.calls: list[Call] = []
        self.chats: dict[int, JSON] = {BOT_USER["id"]: {"id": BOT_USER["id"], "type": "private"}}
        self.members: dict[tuple[int, int], JSON] = {}
        self.messages: dict[int, dict[int, JSON]] = {}
        self.topics: dict[int, dict[int, str]] = {}
        self.started: set[int] = set()  # users who opened a private chat with the bot
        self.migrated: dict[int, int] = {}
        self.commands: dict[tuple[str, str], list[JSON]] = {}
        self.failures: list[Failure] = []
        self._message_ids: dict[int, itertools.count[int]] = {}

    # --- BaseRequest ----------------------------------------------------------------------

    @property
    def read_timeout(self) -> float | None:
        return 5.0

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = DEFAULT_NONE,
        write_timeout: ODVInput[float] = DEFAULT_NONE,
        connect_timeout: ODVInput[float] = DEFAULT_NONE,
        pool_timeout: ODVInput[float] = DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        if self.latency is not None:
            await asyncio.sleep(self.latency())
        api_method = url.rsplit("/", 1)[-1]
        params: JSON = dict(request_data.parameters) if request_data else {}
        files: dict[str, bytes] = {}
        if request_data is not None and request_data.contains_files:
            for name, value in request_data.multipart_data.items():
                content = value[1] if isinstance(value, tuple) else value
                files[name] = (
                    content if isinstance(content, bytes) else bytes(str(content), "utf-8")
                )
        call = Call(api_method, params, files=files)
        if self.transcript:
            self.calls.append(call)
        failure = self._take_failure(api_method, params)
        if failure is not None:
            if failure.timeout:
                call.error = "timed out"
                raise TimedOut("stand-in: injected timeout")
            return self._error(
                call, ApiError(failure.code, failure.description, failure.parameters)
            )
        handler = getattr(self, f"_api_{api_method}", None)
        if handler is None:
            raise NotImplementedError(f"the stand-in does not answer {api_method}")
        if self.flood is not None and api_method in _SEND_METHODS and "chat_id" in params:
            wait = self.flood.retry_after(int(params["chat_id"]), self.clock())
            if wait is not None:
                self.too_many += 1
                return self._error(
                    call,
                    ApiError(429, f"Too Many Requests: retry after {wait}", {"retry_after": wait}),
                )
        try:
            call.result = handler(params)
        except ApiError as exc:
            return self._error(call, exc)
        if api_method in _SEND_METHODS:
            chat_id = int(params["chat_id"])
            self.delivered[chat_id] += 1
            now = self.clock()
            self.first_delivery = now if self.first_delivery is None else self.first_delivery
            self.last_delivery = now
        return 200, json.dumps({"ok": True, "result": call.result}).encode()

    @staticmethod
    def _error(call: Call, exc: ApiError) -> tuple[int, bytes]:
        call.error = exc.description
        body: JSON = {"ok": False, "error_code": exc.code, "description": exc.description}
        if exc.parameters:
            body["parameters"] = exc.parameters
        return exc.code, json.dumps(body).encode()

    # --- failures on cue -------------------------------------------------------------------

    def fail(
        self,
        kind: str,
        *,
        method: str | None = None,
        chat_id: int | None = None,
        times: int = 1,
        retry_after: int = 3,
        new_chat_id: int | None = None,
    ) -> None:
        """Make the next `times` matching calls fail.

        kind: "429", "403", "chat_not_found", "migrated" (to new_chat_id) or "timeout".
        """
        failures = {
            "429": Failure(method, chat_id, 429, f"Too Many Requests: retry after {retry_after}",
                           {"retry_after": retry_after}),
            "403": Failure(method, chat_id, 403, "Forbidden: bot was kicked from the group chat"),
            "chat_not_found": Failure(method, chat_id, 400, "Bad Request: chat not found"),
            "migrated": Failure(method, chat_id, 400,
                                "Bad Request: group chat was upgraded to a supergroup chat",
                                {"migrate_to_chat_id": new_chat_id}),
            "timeout": Failure(method, chat_id, 0, "timed out", timeout=True),
        }  # fmt: skip
        failure = failures[kind]
        failure.times = times
        self.failures.append(failure)

    def _take_failure(self, method: str, params: JSON) -> Failure | None:
        for failure in self.failures:
            if failure.method not in (None, method):
                continue
            if failure.chat_id is not None and str(params.get("chat_id")) != str(failure.chat_id):
                continue
            failure.times -= 1
            if failure.times <= 0:
                self.failures.remove(failure)
            return failure
        return None

    # --- the world -------------------------------------------------------------------------

    def add_chat(
        self, chat: JSON, *, bot_status: str = "administrator", can_pin: bool = True
    ) -> None:
        self.chats[int(chat["id"])] = chat
        self.set_bot_member(int(chat["id"]), bot_status, can_pin=can_pin)

    def set_bot_member(self, chat_id: int, status: str, *, can_pin: bool = True) -> JSON:
        member: JSON = {"status": status, "user": BOT_USER}
        if status == "kicked":
            member["until_date"] = 0
        if status == "administrator":
            member.update(_admin_rights(can_pin=can_pin, full=False))
        self.members[(chat_id, BOT_USER["id"])] = member
        return member

    def bot_status(self, chat_id: int) -> str:
        return str(self.members.get((chat_id, BOT_USER["id"]), {}).get("status", "left"))

    def store_message(self, message: JSON) -> JSON:
        if not self.transcript:
            return message
        self.messages.setdefault(int(message["chat"]["id"]), {})[int(message["message_id"])] = (
            message
        )
        return message

    def reserve(self, chat_ids: list[int]) -> None:
        """Create the per-chat bookkeeping up front, so that a benchmark tracing memory counts
        the bot's allocations, not the stand-in's."""
        for chat_id in chat_ids:
            self.delivered.setdefault(chat_id, 0)
            self._message_ids.setdefault(chat_id, itertools.count(1))

    def next_message_id(self, chat_id: int) -> int:
        counter = self._message_ids.setdefault(chat_id, itertools.count(1))
        return next(counter)

    def sent(self, chat_id: int | None = None) -> list[Call]:
        return messages(self.calls, chat_id)

    # --- helpers for the methods ------------------------------------------------------------

    def _chat_for_send(self, params: JSON) -> JSON:
        chat_id = int(params["chat_id"])
        if chat_id in self.migrated:
            raise ApiError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": self.migrated[chat_id]},
            )
        if chat_id > 0:
            if chat_id not in self.started:
                raise ApiError(403, "Forbidden: bot can't initiate conversation with a user")
            return self.chats.setdefault(chat_id, {"id": chat_id, "type": "private"})
        chat = self.chats.get(chat_id)
        if chat is None:
            raise ApiError(400, "Bad Request: chat not found")
        if self.bot_status(chat_id) in ("left", "kicked"):
            raise ApiError(403, "Forbidden: bot was kicked from the group chat")
        thread = params.get("message_thread_id")
        if thread and int(thread) not in self.topics.get(chat_id, {}):
            raise ApiError(400, "Bad Request: message thread not found")
        return chat

    @staticmethod
    def _check_markup(params: JSON) -> None:
        markup = params.get("reply_markup")
        if not isinstance(markup, dict):
            return
        for row in markup.get("inline_keyboard", []):
            for btn in row:
                data = btn.get("callback_data")
                if data is not None and not 1 <= len(str(data).encode()) <= 64:
                    raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
                if not str(btn.get("text", "")).strip():
                    raise ApiError(
                        400, "Bad Request: text buttons are unallowed in the inline keyboard"
                    )

    @staticmethod
    def _check_text(text: str, parse_mode: str | None, limit: int) -> None:
        shown = check_html(text) if parse_mode == "HTML" else text
        if not shown.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if utf16_length(shown) > limit:
            raise ApiError(400, "Bad Request: message is too long")

    def _new_message(self, chat: JSON, params: JSON, **content: Any) -> JSON:
        chat_id = int(chat["id"])
        message: JSON = {
            "message_id": self.next_message_id(chat_id),
            "date": int(self.clock()),
            "chat": chat,
            "from": BOT_USER,
            **content,
        }
        thread = params.get("message_thread_id")
        if thread:
            message["message_thread_id"] = int(thread)
            message["is_topic_message"] = True
        markup = params.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            message["reply_markup"] = markup  # Telegram echoes inline keyboards only
        reply = params.get("reply_parameters")
        if isinstance(reply, dict):
            quoted = self.messages.get(chat_id, {}).get(int(reply["message_id"]))
            if quoted is not None:
                message["reply_to_message"] = {
                    k: v for k, v in quoted.items() if k != "reply_to_message"
                }
        return self.store_message(message)

    def _stored(self, params: JSON) -> JSON:
        chat_id, message_id = int(params["chat_id"]), int(params["message_id"])
        message = self.messages.get(chat_id, {}).get(message_id)
        if message is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        return message

    # --- the Bot API methods Linli uses -------------------------------------------------------

    def _api_getMe(self, params: JSON) -> JSON:
        return {**BOT_USER, "can_join_groups": True, "can_read_all_group_messages": False,
                "supports_inline_queries": False}  # fmt: skip

    def _api_sendMessage(self, params: JSON) -> JSON:
        chat = self._chat_for_send(params)
        text = str(params.get("text", ""))
        self._check_text(text, params.get("parse_mode"), _TEXT_LIMIT)
        self._check_markup(params)
        return self._new_message(chat, params, text=text)

    def _api_sendPhoto(self, params: JSON) -> JSON:
        chat = self._chat_for_send(params)
        caption = str(params.get("caption", ""))
        if caption:
            self._check_text(caption, params.get("parse_mode"), _CAPTION_LIMIT)
        self._check_markup(params)
        photo = [{"file_id": f"photo-{len(self.calls)}", "file_unique_id": f"u{len(self.calls)}",
                  "width": 640, "height": 640}]  # fmt: skip
        return self._new_message(chat, params, photo=photo, caption=caption)

    def _api_sendDocument(self, params: JSON) -> JSON:
        chat = self._chat_for_send(params)
        document = {"file_id": f"doc-{len(self.calls)}", "file_unique_id": f"d{len(self.calls)}"}
        return self._new_message(
            chat, params, document=document, caption=str(params.get("caption", ""))
        )

    def _api_editMessageText(self, params: JSON) -> JSON:
        message = self._stored(params)
        text = str(params.get("text", ""))
        self._check_text(text, params.get("parse_mode"), _TEXT_LIMIT)
        self._check_markup(params)
        markup = params.get("reply_markup")
        if message.get("text") == text and message.get("reply_markup") == markup:
            raise ApiError(400, "Bad Request: message is not modified: specified new message "
                           "content and reply markup are exactly the same")  # fmt: skip
        message["text"] = text
        message["edit_date"] = int(self.clock())
        return _with_markup(message, markup)

    def _api_editMessageReplyMarkup(self, params: JSON) -> JSON:
        message = self._stored(params)
        self._check_markup(params)
        markup = params.get("reply_markup")
        if message.get("reply_markup") == markup:
            raise ApiError(400, "Bad Request: message is not modified")
        return _with_markup(message, markup)

    def _api_deleteMessage(self, params: JSON) -> bool:
        self._stored(params)
        del self.messages[int(params["chat_id"])][int(params["message_id"])]
        return True

    def _api_answerCallbackQuery(self, params: JSON) -> bool:
        if len(str(params.get("text", ""))) > 200:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        return True

    def _api_pinChatMessage(self, params: JSON) -> bool:
        chat_id = int(params["chat_id"])
        member = self.members.get((chat_id, BOT_USER["id"]), {})
        if chat_id < 0 and not member.get("can_pin_messages"):
            raise ApiError(
                400, "Bad Request: not enough rights to manage pinned messages in the chat"
            )
        self._stored(params)
        self.chats[chat_id]["pinned_message_id"] = int(params["message_id"])
        return True

    def _api_unpinChatMessage(self, params: JSON) -> bool:
        self.chats.get(int(params["chat_id"]), {}).pop("pinned_message_id", None)
        return True

    def _api_getChat(self, params: JSON) -> JSON:
        chat = self.chats.get(int(params["chat_id"]))
        if chat is None:
            raise ApiError(400, "Bad Request: chat not found")
        return {**chat, "accent_color_id": 0, "max_reaction_count": 11, "accepted_gift_types": {
            "unlimited_gifts": False, "limited_gifts": False, "unique_gifts": False,
            "premium_subscription": False}}  # fmt: skip

    def _api_getChatMember(self, params: JSON) -> JSON:
        """As Telegram answers: a group's creator, administrators and members (someone who has
        spoken there is a member), anyone else "left"; in a private chat, its one person."""
        chat_id, uid = int(params["chat_id"]), int(params["user_id"])
        chat = self.chats.get(chat_id)
        if chat is None:
            raise ApiError(400, "Bad Request: chat not found")
        user = {"id": uid, "is_bot": False, "first_name": str(uid)}
        if chat.get("type") == "private":
            if uid != chat_id:
                raise ApiError(400, "Bad Request: user not found")
            return {"status": "member", "user": user}
        return self.members.get((chat_id, uid), {"status": "left", "user": user})

    def set_member(self, chat_id: int, user: JSON, status: str = "member") -> None:
        """A person's standing in a group: "creator", "administrator", "member" or "left"."""
        member: JSON = {"status": status, "user": user}
        if status == "creator":
            member["is_anonymous"] = False
        if status == "administrator":
            member.update(_admin_rights(can_pin=True, full=True))
        self.members[(chat_id, int(user["id"]))] = member

    def _api_getChatAdministrators(self, params: JSON) -> list[JSON]:
        chat_id = int(params["chat_id"])
        return [m for (c, _), m in self.members.items()
                if c == chat_id and m["status"] in ("administrator", "creator")]  # fmt: skip

    def _api_createForumTopic(self, params: JSON) -> JSON:
        chat_id = int(params["chat_id"])
        topics = self.topics.setdefault(chat_id, {})
        thread = 1000 + len(topics) * 10
        topics[thread] = str(params["name"])
        return {"message_thread_id": thread, "name": params["name"], "icon_color": 7322096}

    def _api_setMyCommands(self, params: JSON) -> bool:
        scope = params.get("scope") or {"type": "default"}
        self.commands[(str(scope.get("type")), str(params.get("language_code", "")))] = list(
            params.get("commands", [])
        )
        return True

    def _api_deleteMyCommands(self, params: JSON) -> bool:
        scope = params.get("scope") or {"type": "default"}
        self.commands.pop((str(scope.get("type")), str(params.get("language_code", ""))), None)
        return True

    def _api_getMyCommands(self, params: JSON) -> list[JSON]:
        scope = params.get("scope") or {"type": "default"}
        return self.commands.get((str(scope.get("type")), str(params.get("language_code", ""))), [])

    def _api_setWebhook(self, params: JSON) -> bool:
        return True

    def _api_deleteWebhook(self, params: JSON) -> bool:
        return True

    def _api_getUpdates(self, params: JSON) -> list[JSON]:
        return []


class Scene:
    """Builds the updates people cause (as Telegram's JSON) and feeds them to an application.

    Tests and the sandbox speak through it: `await scene.say(alice, group, "/join")`,
    `await scene.tap(alice, message, "3号楼")`; each returns the bot's calls in response.
    """

    def __init__(self, app: Any, telegram: FakeTelegram, *, first_update_id: int = 1) -> None:
        self.app = app
        self.tg = telegram
        self._update_ids = itertools.count(first_update_id)

    # people and chats

    @staticmethod
    def person(
        uid: int, name: str, *, lang: str | None = "zh-hans", username: str | None = None
    ) -> JSON:
        user: JSON = {"id": uid, "is_bot": False, "first_name": name}
        if lang:
            user["language_code"] = lang
        if username:
            user["username"] = username
        return user

    def group(
        self,
        chat_id: int,
        title: str,
        *,
        forum: bool = False,
        bot_status: str = "administrator",
        can_pin: bool = True,
    ) -> JSON:
        kind = "supergroup" if chat_id < -(10**12) or forum else "group"
        chat: JSON = {"id": chat_id, "type": kind, "title": title}
        if forum:
            chat["is_forum"] = True
        self.tg.add_chat(chat, bot_status=bot_status, can_pin=can_pin)
        return chat

    def topic(self, chat: JSON, name: str) -> int:
        topics = self.tg.topics.setdefault(int(chat["id"]), {})
        thread = 100 + len(topics)
        topics[thread] = name
        return thread

    def private(self, user: JSON) -> JSON:
        chat = {"id": user["id"], "type": "private", "first_name": user["first_name"]}
        self.tg.chats[int(user["id"])] = chat
        return chat

    # updates

    async def feed(self, update: JSON) -> list[Call]:
        """Process one update; returns the Bot API calls it caused."""
        before = len(self.tg.calls)
        update = {"update_id": next(self._update_ids), **update}
        await self.process(update)
        return self.tg.calls[before:]

    async def process(self, update: JSON) -> None:
        """Through the application's update processor, the path polling and webhooks take."""
        parsed = Update.de_json(update, self.app.bot)
        await self.app.update_processor.process_update(parsed, self.app.process_update(parsed))

    def message_json(
        self,
        user: JSON,
        chat: JSON,
        text: str,
        *,
        thread: int | None = None,
        reply_to: JSON | None = None,
        **extra: Any,
    ) -> JSON:
        chat_id = int(chat["id"])
        if chat["type"] == "private":
            self.tg.started.add(int(user["id"]))
        elif (chat_id, int(user["id"])) not in self.tg.members:
            self.tg.set_member(chat_id, user)  # whoever speaks in a group is a member of it
        message: JSON = {
            "message_id": self.tg.next_message_id(chat_id),
            "date": int(self.tg.clock()),
            "chat": chat,
            "from": user,
            **extra,
        }
        if text:
            message["text"] = text
            if text.startswith("/"):
                command = text.split()[0]
                message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        if thread:
            message["message_thread_id"] = thread
            message["is_topic_message"] = True
        if reply_to is not None:
            message["reply_to_message"] = {
                k: v for k, v in reply_to.items() if k != "reply_to_message"
            }
        return self.tg.store_message(message)

    async def say(
        self,
        user: JSON,
        chat: JSON,
        text: str,
        *,
        thread: int | None = None,
        reply_to: JSON | None = None,
    ) -> list[Call]:
        message = self.message_json(user, chat, text, thread=thread, reply_to=reply_to)
        return await self.feed({"message": message})

    async def tap(self, user: JSON, message: JSON | Call, button: str | int) -> list[Call]:
        """Tap a button of a bot message by its label (exact or contained) or its index."""
        stored = self.message_of(message)
        data = self.button_data(stored, button)
        return await self.press(user, stored, data)

    async def press(self, user: JSON, message: JSON | Call, data: str) -> list[Call]:
        """Send a callback with any data at all (a forged one, for instance)."""
        stored = self.message_of(message)
        chat = stored["chat"]
        if (
            chat.get("type") != "private"
            and (int(chat["id"]), int(user["id"])) not in self.tg.members
        ):
            self.tg.set_member(int(chat["id"]), user)  # only a member sees a group's buttons
        query = {
            "id": str(next(self._update_ids) * 7919),
            "from": user,
            "chat_instance": str(stored["chat"]["id"]),
            "message": stored,
            "data": data,
        }
        return await self.feed({"callback_query": query})

    def message_of(self, message: JSON | Call) -> JSON:
        if isinstance(message, Call):
            assert isinstance(message.result, dict), f"{message.method} has no message"
            message = message.result
        chat_id, message_id = int(message["chat"]["id"]), int(message["message_id"])
        return self.tg.messages.get(chat_id, {}).get(message_id, message)

    @staticmethod
    def button_data(message: JSON, button: str | int) -> str:
        rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
        flat = [b for row in rows for b in row if "callback_data" in b]
        if isinstance(button, int):
            return str(flat[button]["callback_data"])
        for wanted in (lambda t: t == button, lambda t: button in t):
            for b in flat:
                if wanted(b["text"]):
                    return str(b["callback_data"])
        labels = [b["text"] for b in flat]
        raise LookupError(f"no button {button!r} among {labels}")

    async def bot_added(self, chat: JSON, by: JSON, *, status: str = "administrator") -> list[Call]:
        return await self._bot_becomes(chat, by, status)

    async def bot_removed(self, chat: JSON, by: JSON, *, status: str = "kicked") -> list[Call]:
        return await self._bot_becomes(chat, by, status)

    async def _bot_becomes(self, chat: JSON, by: JSON, status: str) -> list[Call]:
        chat_id = int(chat["id"])
        old = self.tg.members.get((chat_id, BOT_USER["id"]), {"status": "left", "user": BOT_USER})
        new = self.tg.set_bot_member(chat_id, status)
        change = {
            "chat": chat,
            "from": by,
            "date": int(self.tg.clock()),
            "old_chat_member": old,
            "new_chat_member": new,
        }
        return await self.feed({"my_chat_member": change})

    async def migrate(self, chat: JSON, new_id: int, by: JSON) -> tuple[JSON, list[Call]]:
        """The group becomes a supergroup: Telegram tells both the old and the new chat."""
        old_id = int(chat["id"])
        new_chat = {**chat, "id": new_id, "type": "supergroup"}
        self.tg.add_chat(new_chat, bot_status=self.tg.bot_status(old_id))
        self.tg.migrated[old_id] = new_id
        calls = await self.feed(
            {"message": self.message_json(by, chat, "", migrate_to_chat_id=new_id)}
        )
        calls += await self.feed(
            {"message": self.message_json(by, new_chat, "", migrate_from_chat_id=old_id)}
        )
        return new_chat, calls


def _admin_rights(*, can_pin: bool, full: bool) -> JSON:
    """A ChatMemberAdministrator's rights: the bot is given what it needs (and pinning only
    with `can_pin`); a person's `full` rights add video chats, restricting and the chat's info."""
    return {
        "can_be_edited": False, "is_anonymous": False, "can_manage_chat": True,
        "can_delete_messages": True, "can_manage_video_chats": full, "can_restrict_members": full,
        "can_promote_members": False, "can_change_info": full, "can_invite_users": True,
        "can_post_stories": False, "can_edit_stories": False, "can_delete_stories": False,
        "can_pin_messages": can_pin, "can_manage_topics": can_pin,
    }  # fmt: skip


def _with_markup(message: JSON, markup: JSON | None) -> JSON:
    """The edited message with its new buttons (None: none)."""
    if markup is None:
        message.pop("reply_markup", None)
    else:
        message["reply_markup"] = markup
    return message
