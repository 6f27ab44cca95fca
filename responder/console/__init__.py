"""The operators' console under /console: the timeline, the subject and hub pages, and the buttons."""

from responder.console.feed import DecisionFeed
from responder.console.routes import console_routes

__all__ = ["DecisionFeed", "console_routes"]
