"""A local SMTP server for tests/stakeholders.rs (aiosmtpd, plain SMTP on loopback).

Usage: smtp_server.py PORT OUTDIR

Every message accepted is parsed with Python's own email package (an implementation
independent of the lettre code under test) and written to OUTDIR as one JSON file per
message: envelope, every header, the text/plain and text/html parts and the raw
message. Files are renamed into place, so a reader never sees half a file. Prints
"ready" once it accepts connections; stops on SIGTERM/SIGINT.
"""

import json
import os
import signal
import sys
import threading
import time
from email import message_from_bytes
from email.policy import default

from aiosmtpd.controller import Controller


class SaveToDirectory:
    def __init__(self, outdir):
        self.outdir = outdir
        self.lock = threading.Lock()
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        # A mailbox that does not exist, for the permanent-failure test.
        if address.startswith("refused@"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode()
        message = message_from_bytes(raw, policy=default)
        text = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "headers": {k.lower(): str(v) for k, v in message.items()},
            "content_type": message.get_content_type(),
            "text": text.get_content() if text is not None else None,
            "html": html.get_content() if html is not None else None,
            "raw": raw.decode("utf-8", "replace"),
        }
        with self.lock:
            self.count += 1
            name = f"{time.time_ns():020d}-{self.count:06d}.json"
        path = os.path.join(self.outdir, name)
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(path + ".tmp", path)
        return "250 Message accepted for delivery"


def main():
    port = int(sys.argv[1])
    outdir = sys.argv[2]
    os.makedirs(outdir, exist_ok=True)
    controller = Controller(SaveToDirectory(outdir), hostname="127.0.0.1", port=port)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
