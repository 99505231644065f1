"""Unguessable session ids (Engine.IO and Socket.IO sids), from os.urandom read in blocks.

A long-polling session is found by its sid alone, so sids must be as unguessable as
`secrets.token_urlsafe`; reading the randomness 4 KB at a time rather than one system call
per id matters when thousands of clients connect in a second.
"""

from __future__ import annotations

import base64
import os

_BLOCK = 4096
_SID_BYTES = 15


class _RandomBlocks:
    def __init__(self) -> None:
        self._block = b""
        self._at = _BLOCK

    def take(self, count: int) -> bytes:
        if self._at + count > len(self._block):
            self._block, self._at = os.urandom(_BLOCK), 0
        start, self._at = self._at, self._at + count
        return self._block[start : self._at]


_random = _RandomBlocks()


def new_sid() -> str:
    """20 URL-safe characters carrying 120 random bits (as token_urlsafe(15))."""
    return base64.urlsafe_b64encode(_random.take(_SID_BYTES)).decode()
