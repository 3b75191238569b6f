#!/usr/bin/env python3
"""A webhook receiver for the demo: listens where alerts/alertmanager.yml sends its
notifications (http://127.0.0.1:9095/pager and /ticket) and prints each one, with the
time and the alerts' names, status, app and group (README, "See a page")."""
import datetime
import http.server
import json
import sys

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 9095


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.end_headers()
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S")
        try:
            notification = json.loads(body)
        except ValueError:
            print(f"{now} {self.path}: {body!r}", flush=True)
            return
        for alert in notification.get("alerts", []):
            labels = alert.get("labels", {})
            print(
                f"{now} {self.path} {alert.get('status')} {labels.get('alertname')} "
                f"app={labels.get('app', '')} group={labels.get('group', '')}: "
                f"{alert.get('annotations', {}).get('description', '')}",
                flush=True,
            )

    def log_message(self, *args):
        pass


http.server.HTTPServer(("127.0.0.1", PORT), Receiver).serve_forever()
