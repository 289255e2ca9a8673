# netstore/cli/remote.py - asking the daemon that runs a VM.  On one host
# that is the daemon of this configuration (its control socket).  With a
# shared registry the VM may run on another host: the request goes through
# the registry to that host's daemon (netstore.registry.requests), and its
# answer comes back the same way; a request no daemon takes in time is
# withdrawn and refused naming the host.
"""Control requests to the daemon that runs a VM, on this host or another."""

from __future__ import annotations

import time
from typing import Any

from netstore.cli.common import registry
from netstore.config import Config
from netstore.control import ControlError, request
from netstore.registry import requests as host_requests
from netstore.registry.errors import NotFoundError

# How often the CLI looks for another host's answer.
POLL_S = 0.2


def vm_request(config: Config, op: str, timeout: float, **params: Any) -> Any:
    """Ask the daemon that runs VM ``params["name"]`` for `op`; its result.

    Raises:
        ControlError: refused, no daemon here, or the other host did not answer.
    """
    name = params.get("name")
    if config.registry.shared and name:
        with registry(config) as reg:
            try:
                vm = reg.machines.get(name)
            except NotFoundError:
                vm = None
        if vm is not None and vm.running and vm.host not in (None, config.registry.host):
            return on_host(config, vm.host, op, timeout, **params)
    return request(config.daemon.state_dir, op, timeout=timeout, **params)


def on_host(config: Config, host: str, op: str, timeout: float, **params: Any) -> Any:
    """Ask the daemon of another `host` for `op`, through the shared registry.

    Raises:
        ControlError: it refused, or did not answer within `timeout` seconds.
    """
    with registry(config) as reg:  # one connection: each look is a transaction of its own
        rid = host_requests.ask(reg, host, op, params)
        deadline = time.monotonic() + timeout
        while True:
            seen = host_requests.outcome(reg, rid)
            if seen is not None and seen[0] == host_requests.ANSWERED:
                host_requests.withdraw(reg, rid)
                if seen[2] is not None:
                    raise ControlError(f"{host}: {seen[2]}")
                return seen[1]
            if time.monotonic() > deadline:
                if host_requests.withdraw(reg, rid, only_waiting=True):
                    raise ControlError(f"host {host} runs {params.get('name')}, but its daemon "
                                       f"did not take the request within {timeout:g} s")
                raise ControlError(f"host {host} took the request but did not answer within "
                                   f"{timeout:g} s")
            time.sleep(POLL_S)


__all__ = ["vm_request", "on_host"]
