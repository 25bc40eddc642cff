"""``infergrid models traffic NAME``: a model's traffic policy through the repository API.

    infergrid models traffic fraud                                  # show it
    infergrid models traffic fraud --split 3=90,4=10 [--sticky-header x-user-id | --sticky-parameter user_id]
    infergrid models traffic fraud --promote 4                      # all to 4; the rest stay at 0
    infergrid models traffic fraud --rollback                       # the policy before the last change
    infergrid models traffic fraud --clear                          # no policy: the newest version
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from backends.errors import ConfigError
from deployments.repository.traffic import parse_split

__all__ = ["traffic_command", "traffic_change"]


def traffic_change(args: argparse.Namespace) -> dict | None:
    """The repository API body the flags ask for (None: only show the policy).

    Raises:
        ConfigError: a bad --split, or more than one change asked for.
    """
    asked = [flag for flag, given in (("--split", args.split), ("--promote", args.promote is not None),
                                      ("--rollback", args.rollback), ("--clear", args.clear)) if given]
    if len(asked) > 1:
        raise ConfigError(f"give one of {', '.join(asked)}")
    if args.split:
        policy: dict = {"weights": parse_split(args.split)}
        if args.sticky_header:
            policy["sticky"] = {"header": args.sticky_header}
        elif getattr(args, "sticky_parameter", None):
            policy["sticky"] = {"parameter": args.sticky_parameter}
        return {"policy": policy}
    if args.promote is not None:
        return {"promote": args.promote}
    if args.rollback:
        return {"rollback": True}
    if args.clear:
        return {"clear": True}
    return None


def traffic_command(args: argparse.Namespace, request: Callable, api_key: str | None) -> int:
    """Show or change ``args.name``'s policy; ``request`` is the CLI's repository request function."""
    if not args.name:
        print("infergrid models traffic: give a model name", file=sys.stderr)
        return 2
    try:
        change = traffic_change(args)
    except ConfigError as exc:
        print(f"infergrid models traffic: {exc}", file=sys.stderr)
        return 2
    path = f"/v2/repository/models/{args.name}/traffic"
    status, answer = request(args.url, path, change, api_key, "GET" if change is None else "POST")
    if status == 200:
        print(json.dumps(answer.get("policy") if isinstance(answer, dict) else answer))
        return 0
    message = answer.get("error", answer) if isinstance(answer, dict) else answer
    print(f"infergrid models traffic: HTTP {status}: {message}", file=sys.stderr)
    return 1
