"""Mail to an account's owner, through Synapse's own mailer and `email:` settings.

Only the account's verified addresses (Synapse's threepids) are ever written to: no
address comes from a request, so nobody can use the guard to learn whether an address
is known here, nor to mail a stranger.
"""

from __future__ import annotations

from synapse.module_api import ModuleApi

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard.notice_texts import Message


class Mailer:
    def __init__(self, api: ModuleApi) -> None:
        self._api = api
        # Synapse reads its email settings once, at start-up.
        self.available = internals.mail_configured(api)

    async def addresses(self, user_id: str) -> list[str]:
        """The account's verified email addresses (none if mail cannot be sent)."""
        if not self.available:
            return []
        threepids = await self._api.get_threepids_for_user(user_id)
        return sorted(
            {
                threepid["address"]
                for threepid in threepids
                if threepid["medium"] == "email"
            }
        )

    async def send(self, addresses: list[str], message: Message) -> None:
        """Send one message to each address (raises on the first that fails)."""
        for address in addresses:
            await self._api.send_mail(
                address, message.subject, message.html, message.text
            )
