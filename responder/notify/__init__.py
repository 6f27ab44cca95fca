"""Telling people what the responder decided and did: notices, routed to chat, webhooks and e-mail."""

from responder.notify.notice import Notice, NoticeKind, Notices

__all__ = ["Notice", "NoticeKind", "Notices"]
