-- wrk script: POST /echo with a 128-byte body on keep-alive connections.
wrk.method = "POST"
wrk.body = string.rep("x", 128)
wrk.headers["Content-Type"] = "application/octet-stream"
