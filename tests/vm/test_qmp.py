# tests/vm/test_qmp.py - the QMP client against a real QEMU (no guest:
# `-machine none -S`): capabilities negotiated, commands answered, a refused
# command raised with QEMU's error class, events kept (STOP, RESUME),
# commands sent concurrently each get their own answer; and against a peer
# that speaks garbage (hypothesis): a clear QmpError, never a hang or another
# exception.
"""netstore.vm.qmp with the real QEMU and with broken peers."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from netstore.vm.qmp import Qmp, QmpError

QEMU = "qemu-system-x86_64"


@pytest.mark.skipif(shutil.which(QEMU) is None, reason="qemu-system-x86_64 missing")
async def test_real_qemu_answers_refuses_and_tells_events(tmp_path):
    sock = tmp_path / "qmp.sock"
    proc = subprocess.Popen([QEMU, "-machine", "none", "-S", "-display", "none", "-nodefaults",
                             "-qmp", f"unix:{sock},server=on,wait=off"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        with trio.fail_after(20):
            while not sock.exists():
                await trio.sleep(0.02)
            async with trio.open_nursery() as nursery:
                qmp = await Qmp.connect(sock, nursery)
                assert (await qmp.execute("query-status"))["status"] == "prelaunch"
                with pytest.raises(QmpError) as e:
                    await qmp.execute("no-such-command")
                assert e.value.error_class == "CommandNotFound"
                results: dict[int, str] = {}

                async def ask(i: int) -> None:
                    results[i] = (await qmp.execute("query-name")).get("name", "")

                async with trio.open_nursery() as asking:
                    for i in range(20):
                        asking.start_soon(ask, i)
                assert len(results) == 20
                await qmp.execute("cont")
                await qmp.execute("stop")
                while not qmp.seen("STOP"):
                    await trio.sleep(0.02)
                assert qmp.seen("RESUME")
                await qmp.execute("quit")
                await qmp.closed.wait()
                with pytest.raises(QmpError):
                    await qmp.execute("query-status")
                nursery.cancel_scope.cancel()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class _Peer(trio.abc.Stream):
    """A stream that says ``data`` and then closes."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def send_all(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        chunk, self.data = self.data[:7], self.data[7:]
        return chunk

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode)
       | st.integers(1, 5000).map(lambda n: b"[" * n + b"\n"))
def test_garbage_from_the_peer_is_a_qmp_error(data):
    async def main() -> None:
        qmp = Qmp(_Peer(data))
        with trio.fail_after(5):
            try:
                obj = await qmp._read_object()
            except QmpError:
                return
            assert isinstance(obj, dict)

    trio.run(main)
