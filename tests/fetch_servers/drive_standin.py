"""A STAND-IN for Google Drive API v3 and Google's OAuth2 token endpoint, written for Clarity's
tests because no Google service can be reached from the test machines. It follows the
documented behaviour that Clarity relies on and is stricter than the real service where that
catches client mistakes:

- POST /token: grant_type=refresh_token (client id, secret and refresh token must all match;
  a revoked or unknown refresh token is 400 {"error": "invalid_grant"}; a wrong client is 401
  {"error": "invalid_client"}) and grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer (an
  RS256 JWT whose signature is verified against the service account's public key, whose iss,
  aud and scope must be right and whose lifetime is at most an hour). Answers carry
  access_token, expires_in and token_type.
- GET /drive/v3/files: files.list with a `q` query of exactly the form
  "'<parent>' in parents and name = '<name>' and trashed = false and mimeType (=|!=) '<folder
  mime>'" (anything else is 400 invalidParameter), paged `page_size` files at a time with
  nextPageToken; unknown parameters are 400.
- GET /drive/v3/files/<id>?alt=media: the content; Range `bytes=N-` answers 206 with
  Content-Range, or 416 with `bytes */size` when N is past the end; without alt=media, 400.
- Every API call needs `Authorization: Bearer <token>` with a token it issued that has not
  expired; otherwise 401 with Google's error body. Faults: tokens that go stale after some uses
  (`stale_after_uses`), the first `rate_limit_first` API calls rate limited (403
  rateLimitExceeded and 429 in turn), Range ignored (`ignore_range`).
Every request is logged as one JSON line to the log file.

Usage: drive_standin.py CONFIG.json
"""

import hashlib, http.server, json, sys, threading, time, urllib.parse

config = json.load(open(sys.argv[1]))
lock = threading.Lock()
state = {"tokens": {}, "issued": 0, "api_calls": 0}
FOLDER = "application/vnd.google-apps.folder"
SCOPE = "https://www.googleapis.com/auth/drive.readonly"
LIST_PARAMS = {"q", "fields", "pageSize", "pageToken", "supportsAllDrives", "includeItemsFromAllDrives"}
MEDIA_PARAMS = {"alt", "supportsAllDrives"}
SHA256_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")


def log(entry):
    with lock:
        with open(config["log"], "a") as f:
            f.write(json.dumps(entry) + "\n")


def b64url_decode(s):
    import base64
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def verify_rs256(signing_input, signature):
    sa = config["service_account"]
    n, e = int(sa["n"], 16), sa["e"]
    k = (n.bit_length() + 7) // 8
    if len(signature) != k:
        return False
    m = pow(int.from_bytes(signature, "big"), e, n).to_bytes(k, "big")
    digest = SHA256_PREFIX + hashlib.sha256(signing_input).digest()
    expected = b"\x00\x01" + b"\xff" * (k - 3 - len(digest)) + b"\x00" + digest
    return m == expected


def parse_q(q):
    """The parent, name and whether folders are wanted, or None for any other query."""
    def literal(s):
        if not s.startswith("'"):
            return None, s
        out, i = "", 1
        while i < len(s):
            c = s[i]
            if c == "\\" and i + 1 < len(s):
                out += s[i + 1]
                i += 2
                continue
            if c == "'":
                return out, s[i + 1:]
            out += c
            i += 1
        return None, s

    parent, rest = literal(q)
    if parent is None or not rest.startswith(" in parents and name = "):
        return None
    name, rest = literal(rest[len(" in parents and name = "):])
    if name is None or not rest.startswith(" and trashed = false and mimeType "):
        return None
    rest = rest[len(" and trashed = false and mimeType "):]
    for op, folders in (("= ", True), ("!= ", False)):
        if rest.startswith(op):
            mime, tail = literal(rest[len(op):])
            if mime == FOLDER and tail == "":
                return parent, name, folders
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=None, headers=(), raw=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        # Logged before answering, so the log's order is the order the client saw.
        self.entry["status"] = status
        log(self.entry)
        self.send_response(status)
        if raw is None:
            self.send_header("Content-Type", "application/json; charset=UTF-8")
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def api_error(self, status, reason, message):
        self.answer(status, {"error": {"code": status, "message": message,
                                       "errors": [{"domain": "global", "reason": reason, "message": message}]}})

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length", "0"))
        form = urllib.parse.parse_qs(self.rfile.read(length).decode(), strict_parsing=True)
        form = {k: v[0] for k, v in form.items()}
        self.entry = {"method": "POST", "path": url.path, "grant_type": form.get("grant_type")}
        if url.path != "/token":
            return self.answer(404, {"error": "not_found"})
        if self.headers.get("Content-Type") != "application/x-www-form-urlencoded":
            return self.answer(400, {"error": "invalid_request"})
        grant = form.get("grant_type")
        if grant == "refresh_token":
            c = config["client"]
            if form.get("client_id") != c["client_id"] or form.get("client_secret") != c["client_secret"]:
                return self.answer(401, {"error": "invalid_client", "error_description": "Unauthorized"})
            if form.get("refresh_token") not in c["refresh_tokens"]:
                return self.answer(400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
        elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            parts = form.get("assertion", "").split(".")
            if len(parts) != 3:
                return self.answer(400, {"error": "invalid_grant", "error_description": "Invalid JWT."})
            header, claims = json.loads(b64url_decode(parts[0])), json.loads(b64url_decode(parts[1]))
            now = time.time()
            ok = (header.get("alg") == "RS256"
                  and verify_rs256((parts[0] + "." + parts[1]).encode(), b64url_decode(parts[2]))
                  and claims.get("iss") == config["service_account"]["email"]
                  and claims.get("aud") == config["token_url"]
                  and SCOPE in claims.get("scope", "").split()
                  and abs(claims.get("iat", 0) - now) < 300
                  and 0 < claims.get("exp", 0) - claims.get("iat", 0) <= 3600)
            if not ok:
                return self.answer(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
        else:
            return self.answer(400, {"error": "unsupported_grant_type"})
        with lock:
            state["issued"] += 1
            token = "standin-token-%d" % state["issued"]
            state["tokens"][token] = {"expires": time.time() + config["expires_in"], "uses": 0}
        self.entry["issued"] = token
        self.answer(200, {"access_token": token, "expires_in": config["expires_in"], "token_type": "Bearer", "scope": SCOPE})

    def authorized(self):
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        self.entry["token"] = token
        with lock:
            t = state["tokens"].get(token)
            if t is None or t["expires"] < time.time():
                return False
            t["uses"] += 1
            stale = config.get("stale_after_uses", 0)
            if stale and t["uses"] > stale:
                return False
        return True

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        self.entry = {"method": "GET", "path": url.path, "query": query, "range": self.headers.get("Range")}
        if not self.authorized():
            return self.answer(401, {"error": {"code": 401, "status": "UNAUTHENTICATED",
                                               "message": "Request had invalid authentication credentials.",
                                               "errors": [{"reason": "authError", "message": "Invalid Credentials"}]}})
        with lock:
            state["api_calls"] += 1
            n = state["api_calls"]
        if n <= config.get("rate_limit_first", 0):
            if n % 2:
                return self.api_error(403, "rateLimitExceeded", "Rate Limit Exceeded")
            return self.api_error(429, "rateLimitExceeded", "Too Many Requests")
        if url.path == "/drive/v3/files":
            return self.list(query)
        prefix = "/drive/v3/files/"
        if url.path.startswith(prefix):
            return self.media(urllib.parse.unquote(url.path[len(prefix):]), query)
        return self.api_error(404, "notFound", "Not Found")

    def list(self, query):
        if set(query) - LIST_PARAMS:
            return self.api_error(400, "invalidParameter", "Unknown parameter")
        parsed = parse_q(query.get("q", ""))
        if parsed is None:
            return self.api_error(400, "invalidParameter", "Invalid Value")
        parent, name, folders = parsed
        matches = [f for f in config["files"]
                   if f["parent"] == parent and f["name"] == name and bool(f.get("folder")) == folders]
        start = int(query.get("pageToken", "0") or "0")
        size = min(int(query.get("pageSize", "100")), config.get("page_size", 100))
        page = matches[start:start + size]
        body = {"files": [{"id": f["id"], "name": f["name"]} for f in page]}
        if start + size < len(matches):
            body["nextPageToken"] = str(start + size)
        self.answer(200, body)

    def media(self, file_id, query):
        if set(query) - MEDIA_PARAMS or query.get("alt") != "media":
            return self.api_error(400, "invalidParameter", "alt=media is required for content")
        f = next((f for f in config["files"] if f["id"] == file_id and not f.get("folder")), None)
        if f is None:
            return self.api_error(404, "notFound", "File not found: %s." % file_id)
        data = open(f["content"], "rb").read()
        r = self.headers.get("Range")
        if r and not config.get("ignore_range"):
            if not r.startswith("bytes=") or not r.endswith("-"):
                return self.api_error(400, "invalidParameter", "only open-ended ranges are expected")
            first = int(r[len("bytes="):-1])
            if first >= len(data):
                return self.answer(416, raw=b"", headers=[("Content-Range", "bytes */%d" % len(data))])
            return self.answer(206, raw=data[first:], headers=[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", "bytes %d-%d/%d" % (first, len(data) - 1, len(data)))])
        self.answer(200, raw=data, headers=[("Content-Type", "application/octet-stream")])


http.server.ThreadingHTTPServer(("127.0.0.1", config["port"]), Handler).serve_forever()
