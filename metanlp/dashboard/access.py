"""Who may change things: anyone on this machine; on a network, only who knows the shared token.

The dashboard binds 127.0.0.1 by default (``.streamlit/config.toml``), so only this machine's
users reach it. Serving a lab network is a deliberate choice (``--server.address 0.0.0.0``);
then every page that launches, cancels, deletes or uploads asks once per browser session for
the token in ``$METANLP_DASHBOARD_TOKEN``, and refuses outright when none is set. Read-only
pages (Home, Attention, Episodes, Leaderboard, the Runs curves) stay open.
"""

from __future__ import annotations

import hmac
import ipaddress
import os

import streamlit as st

TOKEN_VARIABLE = "METANLP_DASHBOARD_TOKEN"
_GRANTED = "access_granted"  # session-state flag: this browser session gave the right token


def is_loopback(address: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; an empty address means every interface."""
    if not address:
        return False
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: it may resolve anywhere
        return False


def served_address() -> str:
    return str(st.get_option("server.address") or "")


def write_access(action: str) -> bool:
    """Whether this session may ``action`` (e.g. "launch runs"); draws the token prompt if needed."""
    address = served_address()
    if is_loopback(address):
        return True
    token = os.environ.get(TOKEN_VARIABLE, "")
    where = f"on {address}" if address else "on every network interface"
    if not token:
        st.error(
            f"This dashboard is served {where}, so others on the network can reach it, and no access token "
            f"is set: to {action} from here, restart it with `{TOKEN_VARIABLE}=<a secret>` (and share the "
            "secret with your lab), or serve it on 127.0.0.1 only (the default).",
            icon=":material/lock:",
        )
        return False
    if st.session_state.get(_GRANTED):
        return True
    entered = st.text_input(f"Access token (needed to {action} on a shared dashboard)", type="password")
    if entered and hmac.compare_digest(entered.encode(), token.encode()):
        st.session_state[_GRANTED] = True
        st.rerun()
    if entered:
        st.error("That is not the access token.", icon=":material/lock:")
    return False
