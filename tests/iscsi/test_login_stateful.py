# A hypothesis state machine (RuleBasedStateMachine) driving the login machine
# of netstore.iscsi.login through the stages security -> operational -> full
# feature, CHAP steps, and requests in the wrong order or with broken headers.
"""Stateful tests of the iSCSI login machine (RFC 7143 6.3, 11.12-11.13, 12.1.3).

A model of what the login has agreed so far (stage, CHAP step, authenticated)
predicts every answer: success with or without transit, or a refusal with the
status of RFC 7143 11.13.5.  Every response is also checked against the rules
that hold whatever was sent, and no request ever raises.
"""

from __future__ import annotations

import hashlib
import itertools
import logging

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from netstore.iscsi.login import (
    MAX_LOGIN_PDUS,
    LoginMachine,
    LoginRequest,
    LoginResponse,
    LoginStatus,
)
from netstore.iscsi.text import TargetLimits, encode_text, parse_text
from tests.iscsi.targets import CHAP_TARGET, INITIATOR, OPEN_TARGET, make_directory

ISID = bytes.fromhex("00023d000001")
SECRET = b"alice-secret-1"  # CHAP_TARGET's initiator secret (user "alice")
VALID = {(0, 1), (0, 3), (1, 3)}  # the stage transitions of RFC 7143 6.3

OK = LoginStatus.SUCCESS
INITIATOR_ERROR = LoginStatus.INITIATOR_ERROR
AUTH_FAILURE = LoginStatus.AUTHENTICATION_FAILURE


class LoginStages(RuleBasedStateMachine):
    """The model: stage, CHAP step and authentication of one login."""

    @initialize(kind=st.sampled_from(["open", "chap", "chap", "discovery"]))
    def start_machine(self, kind: str) -> None:
        self.kind = kind
        tsihs = itertools.count(0x20)
        self.machine = LoginMachine(
            make_directory(), portal_group_tag=1, limits=TargetLimits(),
            log=logging.getLogger("test.login.stateful"),
            find_session=lambda name, isid, tsih: None, new_tsih=lambda: next(tsihs))
        self.started = False
        self.stage: int | None = None
        self.chap: str | None = None  # None, "method" (await CHAP_A), "challenged", "done"
        self.authenticated = False
        self.ended = False
        self.pdus = 0
        self.itt = 0
        self.challenge: tuple[int, bytes] | None = None

    # -- sending and checking ------------------------------------------------------
    def send(self, pairs: list[tuple[str, str]] | bytes, *, csg: int, nsg: int = 0,
             transit: bool = False, cont: bool = False, isid: bytes = ISID, cid: int = 0,
             version_min: int = 0) -> LoginResponse:
        self.itt += 1
        self.pdus += 1
        data = pairs if isinstance(pairs, bytes) else encode_text(pairs)
        req = LoginRequest(transit=transit, cont=cont, csg=csg, nsg=nsg, version_max=0,
                           version_min=version_min, isid=isid, tsih=0, itt=self.itt, cid=cid,
                           cmdsn=1, exp_statsn=0, data=data)
        rsp = self.machine.receive(req)
        # What holds whatever was sent (RFC 7143 11.13).
        assert rsp.isid == req.isid and rsp.itt == req.itt
        assert rsp.version_max == 0 and rsp.version_active == 0
        assert rsp.status_class in (0, 2, 3)
        parse_text(rsp.data)
        if rsp.status_class:
            assert self.machine.failed and not self.machine.done
            assert rsp.data == b"" and not rsp.transit
        else:
            assert not self.machine.failed and rsp.csg == req.csg
            assert not rsp.cont
            if rsp.transit:
                assert req.transit and rsp.nsg == req.nsg
            else:
                assert rsp.nsg == 0  # reserved when T=0
            assert self.machine.done == (rsp.transit and rsp.nsg == 3)
            if self.machine.done:
                assert rsp.tsih and self.machine.outcome is not None
        return rsp

    def expect(self, rsp: LoginResponse, status: LoginStatus, *, transit: bool = False,
               nsg: int = 0) -> None:
        """Compare with the model's prediction, then move the model along."""
        if self.pdus > MAX_LOGIN_PDUS:
            status, transit = INITIATOR_ERROR, False
        got = rsp.status_class << 8 | rsp.status_detail
        assert got == status, f"status {got:04x}, model says {status:04x}"
        if status:
            self.ended = True
            return
        assert rsp.transit == transit
        if transit:
            self.stage = nsg
            self.ended = nsg == 3

    def first_keys(self) -> list[tuple[str, str]]:
        pairs = [("InitiatorName", INITIATOR)]
        if self.kind == "discovery":
            pairs.append(("SessionType", "Discovery"))
        else:
            pairs += [("SessionType", "Normal"),
                      ("TargetName", CHAP_TARGET if self.kind == "chap" else OPEN_TARGET)]
        return pairs

    # -- the first request -----------------------------------------------------------
    @precondition(lambda self: not self.started)
    @rule(to=st.sampled_from([(0, 1), (0, 3), (1, 3), (0, None), (1, None)]),
          auth=st.sampled_from([None, "None", "CHAP", "CHAP,None", "CHAP", "CHAP,None"]))
    def first_request(self, to: tuple[int, int | None], auth: str | None) -> None:
        """A well-formed first request: a stage, maybe a transit, maybe AuthMethod."""
        csg, nsg = to
        transit = nsg is not None
        nsg = nsg or 0
        self.started, self.stage = True, csg
        pairs = self.first_keys()
        if auth is not None and csg == 0:
            pairs.append(("AuthMethod", auth))
        rsp = self.send(pairs, csg=csg, nsg=nsg, transit=transit)
        chap_target = self.kind == "chap"
        if csg == 1:
            if chap_target:
                return self.expect(rsp, AUTH_FAILURE)  # CHAP cannot be skipped
            self.authenticated = True
            return self.expect(rsp, OK, transit=transit, nsg=nsg)
        wanted = "CHAP" if chap_target else "None"
        if auth is not None and wanted not in auth.split(","):
            return self.expect(rsp, AUTH_FAILURE)  # AuthMethod answered Reject
        if auth is None:
            if transit and chap_target:
                return self.expect(rsp, AUTH_FAILURE)  # leaving security unauthenticated
            self.authenticated = transit
            return self.expect(rsp, OK, transit=transit, nsg=nsg)
        if chap_target:
            assert dict(parse_text(rsp.data)).get("AuthMethod") == "CHAP"
            self.chap = "method"
            return self.expect(rsp, OK)  # CHAP runs first: no transit yet
        assert dict(parse_text(rsp.data)).get("AuthMethod") == "None"
        self.authenticated = True
        return self.expect(rsp, OK, transit=transit, nsg=nsg)

    @precondition(lambda self: not self.started)
    @rule(what=st.sampled_from(["csg 2", "csg 3", "1->1", "0->0", "1->0", "0->2", "version",
                                "no InitiatorName", "T and C"]))
    def broken_first_request(self, what: str) -> None:
        """A first request no login may begin with, refused with its status."""
        self.started, self.stage = True, 0
        pairs = self.first_keys()
        kw: dict = {"csg": 0, "nsg": 1, "transit": True}
        status = INITIATOR_ERROR
        if what.startswith("csg"):
            kw["csg"] = int(what[-1])
        elif "->" in what:
            kw["csg"], kw["nsg"] = int(what[0]), int(what[-1])
        elif what == "version":
            kw["version_min"] = 1
            status = LoginStatus.UNSUPPORTED_VERSION
        elif what == "no InitiatorName":
            pairs = pairs[1:]
            status = LoginStatus.MISSING_PARAMETER
        else:
            kw["cont"] = True
        self.expect(self.send(pairs, **kw), status)

    # -- CHAP (RFC 7143 12.1.3) ------------------------------------------------------
    @precondition(lambda self: not self.ended and self.chap == "method")
    @rule(algorithms=st.sampled_from(["5", "5,7", "7,5"]))
    def chap_algorithm(self, algorithms: str) -> None:
        rsp = self.send([("CHAP_A", algorithms)], csg=0)
        self.expect(rsp, OK)
        got = dict(parse_text(rsp.data))
        assert got["CHAP_A"] == "5"
        self.challenge = (int(got["CHAP_I"]), bytes.fromhex(got["CHAP_C"][2:]))
        self.chap = "challenged"

    @precondition(lambda self: not self.ended and self.chap == "challenged")
    @rule(right=st.sampled_from([True, True, True, False]), transit=st.booleans(),
          nsg=st.sampled_from([1, 3]))
    def chap_response(self, right: bool, transit: bool, nsg: int) -> None:
        assert self.challenge is not None
        ident, challenge = self.challenge
        secret = SECRET if right else b"not-the-secret"
        digest = hashlib.md5(bytes([ident]) + secret + challenge).hexdigest()
        rsp = self.send([("CHAP_N", "alice"), ("CHAP_R", "0x" + digest)], csg=0, nsg=nsg,
                        transit=transit)
        if not right:
            return self.expect(rsp, AUTH_FAILURE)
        self.chap, self.authenticated = "done", True
        self.expect(rsp, OK, transit=transit, nsg=nsg)

    # -- requests within a stage -------------------------------------------------------
    @precondition(lambda self: self.started and not self.ended
                  and self.chap not in ("method", "challenged"))
    @rule(transit=st.booleans(), nsg=st.sampled_from([1, 1, 3, 3, 0, 2]))
    def stage_request(self, transit: bool, nsg: int) -> None:
        """A request without keys in the current stage, asking to move on or not."""
        stage = self.stage
        assert stage in (0, 1)
        rsp = self.send([], csg=stage, nsg=nsg, transit=transit)
        if transit and (stage, nsg) not in VALID:
            return self.expect(rsp, INITIATOR_ERROR)
        if stage == 0:
            if transit and self.kind == "chap" and not self.authenticated:
                return self.expect(rsp, AUTH_FAILURE)
            if transit:
                self.authenticated = True
        self.expect(rsp, OK, transit=transit, nsg=nsg)

    @precondition(lambda self: self.started and not self.ended and self.stage == 1)
    @rule(value=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
                        max_size=200),
          cut=st.integers(0, 1000))
    def continued_request(self, value: str, cut: int) -> None:
        """Text split over a C-bit PDU: acknowledged empty, answered when complete."""
        data = encode_text([("X-netstore-probe", value)])
        cut %= len(data)
        first = self.send(data[:cut], csg=1, cont=True)
        self.expect(first, OK)
        assert first.data == b""
        rsp = self.send(data[cut:], csg=1)
        self.expect(rsp, OK)
        assert ("X-netstore-probe", "NotUnderstood") in parse_text(rsp.data)

    @precondition(lambda self: self.started and not self.ended and self.stage == 1)
    @rule()
    def security_key_in_operational_stage(self) -> None:
        rsp = self.send([("CHAP_A", "5")], csg=1)
        self.expect(rsp, OK)
        assert ("CHAP_A", "Reject") in parse_text(rsp.data)

    # -- requests in the wrong order or with broken headers --------------------------------
    @precondition(lambda self: self.started and not self.ended)
    @rule(what=st.sampled_from(["other stage", "T and C", "isid", "cid", "CHAP skipped",
                                "CHAP_A=7"]),
          transit=st.booleans(), nsg=st.sampled_from([1, 3]))
    def broken_request(self, what: str, transit: bool, nsg: int) -> None:
        """Each of these ends the login: initiator error (RFC 7143 6.3, 11.12), or
        authentication failure when CHAP is under way and its keys are missing."""
        stage = self.stage
        if what == "CHAP_A=7" and self.chap == "method":
            rsp = self.send([("CHAP_A", "7")], csg=0)  # MD5 (5) is the only algorithm
            return self.expect(rsp, AUTH_FAILURE)
        if what == "CHAP skipped" and self.chap in ("method", "challenged"):
            rsp = self.send([], csg=0, nsg=nsg, transit=transit)
            return self.expect(rsp, AUTH_FAILURE)
        if what in ("other stage", "CHAP skipped", "CHAP_A=7"):
            rsp = self.send([], csg=1 if stage == 0 else 0)
        elif what == "T and C":
            rsp = self.send([], csg=stage, nsg=nsg, transit=True, cont=True)
        elif what == "isid":
            rsp = self.send([], csg=stage, isid=bytes.fromhex("00023d000002"))
        else:
            rsp = self.send([], csg=stage, cid=7)
        self.expect(rsp, INITIATOR_ERROR)

    @precondition(lambda self: self.ended)
    @rule()
    def nothing_after_the_end(self) -> None:
        """After success or refusal the machine takes no more PDUs (the shell stops)."""
        req = LoginRequest(transit=False, cont=False, csg=1, nsg=0, version_max=0,
                           version_min=0, isid=ISID, tsih=0, itt=999, cid=0, cmdsn=1,
                           exp_statsn=0, data=b"")
        try:
            self.machine.receive(req)
        except RuntimeError:
            pass
        else:
            raise AssertionError("a Login PDU after the end was accepted")

    @invariant()
    def flags_agree_with_the_model(self) -> None:
        if not hasattr(self, "machine"):
            return
        assert not (self.machine.done and self.machine.failed)
        assert (self.machine.done or self.machine.failed) == self.ended
        if self.machine.done:
            out = self.machine.outcome
            assert out is not None and out.initiator_name == INITIATOR
            assert out.auth_method == ("CHAP" if self.kind == "chap" else "None") or (
                self.kind != "chap" and out.auth_method == "None")


LoginStages.TestCase.settings = settings(
    max_examples=300, stateful_step_count=20, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_login_stages = LoginStages.TestCase
