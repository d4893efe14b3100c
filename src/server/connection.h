#pragma once
// The HTTP server's connections, each with a deadline: httplib's own loop would let a client that
// sends one byte a second, or fewer body bytes than its Content-Length, hold a worker thread for
// as long as it likes, and queue connections without end. BoundedServer serves each connection
// on a fixed pool (limits::kHttpThreads), refuses connections past limits::kMaxPendingConnections
// with 503, and reads each request through a stream whose reads fail once the request's phase
// runs out of time: the request line and headers within limits::kHeaderTimeoutSeconds, the body
// within limits::kBodyTimeoutSeconds. A handler runs without a deadline (a generation takes as
// long as it takes) and can ask whether its client is still there.
#include <httplib.h>

#include <string>

namespace strata::server {

class BoundedServer : public httplib::Server {
 public:
  BoundedServer();
  // Binds (port 0: any free port) with a listen backlog of limits::kListenBacklog (httplib's is
  // 5, so connections past it wait in the kernel, unseen and unrefused). Returns the port, or -1
  // (errno says why).
  int bind_bounded(const std::string& host, int port);

 private:
  bool process_and_close_socket(socket_t sock) override;
};

// For the request being handled on this thread (no-ops on a thread that serves no connection):
// The headers are read: the body must arrive within limits::kBodyTimeoutSeconds.
void connection_reading_body();
// The body is read: no deadline while the request is handled.
void connection_handling();
// Whether the last read failed because the request ran out of time (408, not 400).
bool connection_timed_out();
// The message a request that ran out of time gets (names the limits).
std::string connection_timeout_message();
// The connection ends after this response (an unread or refused body must not be taken for the
// next request).
void connection_close_after_response();
// False once the client has closed the connection or it broke (a handler stops its work).
bool client_connected();

}  // namespace strata::server
