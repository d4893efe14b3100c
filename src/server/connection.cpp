#include "server/connection.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "server/http_util.h"
#include "server/limits.h"

namespace strata::server {

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kReadBufferBytes = 4096;

// A connection's socket with a deadline on reads: reads wait at most limits::kReadTimeoutSeconds
// of silence and never past the deadline of the request's current phase.
class ConnectionStream final : public httplib::Stream {
 public:
  explicit ConnectionStream(int fd) : fd_(fd) {}

  bool is_readable() const override { return buffered() > 0 || wait(POLLIN, read_budget_ms()) > 0; }
  bool is_writable() const override {
    return wait(POLLOUT, limits::kWriteTimeoutSeconds * 1000) > 0 && client_still_there();
  }
  ssize_t read(char* ptr, size_t size) override {
    if (buffered() == 0) {
      if (!is_readable()) return -1;
      const ssize_t n = ::recv(fd_, buffer_, sizeof buffer_, 0);
      if (n <= 0) return n;
      begin_ = 0;
      end_ = size_t(n);
    }
    const size_t n = std::min(size, buffered());
    std::copy(buffer_ + begin_, buffer_ + begin_ + n, ptr);
    begin_ += n;
    return ssize_t(n);
  }
  ssize_t write(const char* ptr, size_t size) override {
    if (!is_writable()) return -1;
    return ::send(fd_, ptr, size, MSG_NOSIGNAL);
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override { address(::getpeername, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { address(::getsockname, ip, port); }
  socket_t socket() const override { return fd_; }

  // Waits for the next request's first byte (an idle kept-alive connection).
  bool wait_for_request(int timeout_ms) {
    timed_out_ = false;
    if (buffered() > 0) return true;
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, timeout_ms) > 0;
  }
  void set_deadline(int seconds) {
    has_deadline_ = seconds > 0;
    deadline_ = Clock::now() + std::chrono::seconds(seconds);
  }
  bool timed_out() const { return timed_out_; }
  bool client_still_there() const {
    pollfd p{fd_, POLLRDHUP, 0};
    const int r = ::poll(&p, 1, 0);
    return r == 0 || (r > 0 && !(p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)));
  }
  bool close_after_response = false;

 private:
  size_t buffered() const { return end_ - begin_; }
  // Milliseconds a read may wait: the silence allowed, cut short by the phase's deadline.
  int read_budget_ms() const {
    int64_t ms = limits::kReadTimeoutSeconds * 1000;
    if (has_deadline_) {
      const int64_t left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now()).count();
      if (left <= 0) {
        timed_out_ = true;
        return 0;
      }
      ms = std::min(ms, left);
    }
    return int(ms);
  }
  int wait(short events, int timeout_ms) const {
    if (timeout_ms <= 0) return 0;
    pollfd p{fd_, events, 0};
    int r;
    do {
      r = ::poll(&p, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    if (r == 0 && events == POLLIN) timed_out_ = true;  // silence, or the phase's deadline
    return r;
  }
  template <typename F>
  void address(F get, std::string& ip, int& port) const {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    ip.clear();
    port = 0;
    if (get(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return;
    char host[NI_MAXHOST];
    char serv[NI_MAXSERV];
    if (::getnameinfo(reinterpret_cast<sockaddr*>(&addr), len, host, sizeof host, serv, sizeof serv,
                      NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
      ip = host;
      port = std::atoi(serv);
    }
  }

  int fd_;
  bool has_deadline_ = false;
  Clock::time_point deadline_{};
  mutable bool timed_out_ = false;
  char buffer_[kReadBufferBytes];
  size_t begin_ = 0, end_ = 0;
};

thread_local ConnectionStream* t_connection = nullptr;
thread_local bool t_refuse = false;  // set while the acceptor thread hands over a connection it refuses

// httplib's ThreadPool queues connections without end; this one refuses them past a bound.
class BoundedPool final : public httplib::TaskQueue {
 public:
  BoundedPool() {
    for (int i = 0; i < limits::kHttpThreads; ++i) threads_.emplace_back([this] { work(); });
  }
  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (int(pending_.size()) < limits::kMaxPendingConnections) {
        pending_.push_back(std::move(fn));
        cv_.notify_one();
        return;
      }
    }
    // Full: the connection is answered 503 and closed right here (see process_and_close_socket).
    t_refuse = true;
    fn();
    t_refuse = false;
  }
  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  void work() {
    while (true) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
        if (pending_.empty()) return;
        fn = std::move(pending_.front());
        pending_.pop_front();
      }
      fn();
    }
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> pending_;
  std::vector<std::thread> threads_;
  bool stopping_ = false;
};

void send_raw_error(int fd, int status, const char* reason, const std::string& message) {
  const std::string body = error_body(ErrorStyle::ollama, status, message);
  const std::string text =
      "HTTP/1.1 " + std::to_string(status) + " " + reason +
      "\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\nConnection: close\r\n\r\n" + body;
  pollfd p{fd, POLLOUT, 0};
  if (::poll(&p, 1, 100) > 0) (void)::send(fd, text.data(), text.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

std::string request_timeout_message() {
  return "the request did not arrive in time (the server's limits: headers within " +
         std::to_string(limits::kHeaderTimeoutSeconds) + " s, the body within " +
         std::to_string(limits::kBodyTimeoutSeconds) + " s, at most " + std::to_string(limits::kReadTimeoutSeconds) +
         " s of silence)";
}

void close_socket(int fd) {
  ::shutdown(fd, SHUT_RDWR);
  ::close(fd);
}

}  // namespace

BoundedServer::BoundedServer() {
  new_task_queue = [] { return new BoundedPool(); };
  set_keep_alive_timeout(limits::kKeepAliveSeconds);
  set_keep_alive_max_count(limits::kKeepAliveMaxRequests);
  set_read_timeout(limits::kReadTimeoutSeconds, 0);
  set_write_timeout(limits::kWriteTimeoutSeconds, 0);
  set_payload_max_length(limits::kMaxBodyBytes);
}

int BoundedServer::bind_bounded(const std::string& host, int port) {
  if (port == 0)
    port = bind_to_any_port(host);
  else if (!bind_to_port(host, port))
    port = -1;
  // Listening again on a listening socket only changes its backlog.
  if (port >= 0 && ::listen(svr_sock_, limits::kListenBacklog) != 0) return -1;
  return port;
}

// httplib's keep-alive loop, over a stream with deadlines.
bool BoundedServer::process_and_close_socket(socket_t sock) {
  if (t_refuse) {
    send_raw_error(sock, 503, "Service Unavailable",
                   "server busy: " + std::to_string(limits::kHttpThreads) + " connections are being served and " +
                       std::to_string(limits::kMaxPendingConnections) + " are waiting; try again");
    close_socket(sock);
    return false;
  }
  ConnectionStream stream(sock);
  t_connection = &stream;
  bool ok = false;
  for (int n = 0; n < limits::kKeepAliveMaxRequests && svr_sock_ != INVALID_SOCKET; ++n) {
    // An idle connection waits for its next request only so long.
    if (!stream.wait_for_request(limits::kKeepAliveSeconds * 1000)) break;
    stream.set_deadline(limits::kHeaderTimeoutSeconds);
    bool connection_closed = false;
    ok = process_request(stream, n + 1 == limits::kKeepAliveMaxRequests, connection_closed, nullptr);
    if (stream.timed_out() && !ok) send_raw_error(sock, 408, "Request Timeout", request_timeout_message());
    if (!ok || connection_closed || stream.close_after_response || stream.timed_out()) break;
  }
  t_connection = nullptr;
  close_socket(sock);
  return ok;
}

void connection_reading_body() {
  if (t_connection) t_connection->set_deadline(limits::kBodyTimeoutSeconds);
}

void connection_handling() {
  if (t_connection) t_connection->set_deadline(0);
}

std::string connection_timeout_message() { return request_timeout_message(); }

bool connection_timed_out() { return t_connection && t_connection->timed_out(); }

void connection_close_after_response() {
  if (t_connection) t_connection->close_after_response = true;
}

bool client_connected() { return !t_connection || t_connection->client_still_there(); }

}  // namespace strata::server
