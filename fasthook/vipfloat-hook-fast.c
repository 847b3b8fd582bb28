/*
 * vipfloat-hook-fast: Sentinel's client-reconfig-script, the fast front of
 * vipfloat-hook.
 *
 *   vipfloat-hook-fast <master-name> <role> <state> <from-ip> <from-port> <to-ip> <to-port>
 *
 * It hands Sentinel's seven arguments to the running agent (`vipfloat watch`) on
 * its Unix socket and exits with the agent's verdict, exactly as vipfloat-hook's
 * fast path does, but without starting a Python interpreter: CPython's start-up
 * alone (10-20 ms) is as long as the whole shell script this project replaces,
 * and this path is on every failover's critical path.
 *
 * Whenever it cannot get a verdict it execs the Python vipfloat-hook with the same
 * arguments, which reads the config and acts itself (the direct path):
 *   - nobody listens on the socket (no agent), or the listener did not take the
 *     connection within 500 ms (the Python hook's own connect timeout): plain
 *     exec, so the Python hook also tries the socket the config names, if that
 *     is another one. The socket is non-blocking because a blocking connect()
 *     to a listener whose queue is full (an agent stuck, or not yet accepting)
 *     waits until it accepts, maybe never, and Sentinel kills the script at
 *     60 s, before any fall-back; a full AF_UNIX queue answers EAGAIN at once, so it retries
 *     after short pauses until the 500 ms are up. An agent that accepts at once
 *     costs no extra system call;
 *   - the agent took the request but gave no usable answer within 30 s of the
 *     start (sending, and reading an answer that is too long or trickles in,
 *     all count against that one deadline): exec with VIPFLOAT_DIRECT=1, so the
 *     Python hook does not wait for it a second time (Sentinel kills a script
 *     after 60 s);
 *   - --config or an argument count other than 7: the Python hook parses the
 *     config or reports the usage error (exit 2).
 *
 * Exit codes are the Python hook's: 0 done, 1 transient (Sentinel retries), 2 no
 * retry. One line goes to stderr and, unless stderr is already the journal, to
 * syslog, as the Python hook logs it.
 *
 * Socket: $VIPFLOAT_SOCKET, else /run/vipfloat/agent.sock. The Python hook it
 * falls back to is fixed at build time (-DVIPFLOAT_HOOK=...); see the Makefile.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#ifndef VIPFLOAT_HOOK
#define VIPFLOAT_HOOK "/usr/bin/vipfloat-hook"
#endif
#define DEFAULT_SOCKET "/run/vipfloat/agent.sock"
/* The agent answers within its hook_timeout (default 20 s); past this we act
 * directly, still far inside Sentinel's 60 s kill. From the start, for the whole
 * exchange. A build option only so the tests can wait less. */
#ifndef ANSWER_TIMEOUT_MS
#define ANSWER_TIMEOUT_MS 30000
#endif
/* As long as the Python hook waits to connect (agent_client's connect_timeout). */
#define CONNECT_TIMEOUT_MS 500
#define REQUEST_MAX 8192
#define REPLY_MAX 16384

static const char *program = "vipfloat-hook";

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/* Wait until fd is ready for events or the deadline (now_ms) passes: NULL when
 * ready, else what went wrong. */
static const char *wait_for(int fd, short events, double deadline) {
    for (;;) {
        double left = deadline - now_ms();
        struct pollfd pfd = {.fd = fd, .events = events};
        int ready = left > 0 ? poll(&pfd, 1, (int)left + 1) : 0;
        if (ready > 0) return NULL;
        if (ready == 0) return events == POLLIN ? "no answer in time" : "could not send in time";
        if (errno != EINTR) return strerror(errno);
    }
}

/* Connect the non-blocking fd by the deadline; 0 if connected, else -1.
 * An AF_UNIX listener whose queue is full answers EAGAIN at once (a blocking
 * connect would wait for an accept that may never come, past Sentinel's kill):
 * try again after short, growing pauses. */
static int connect_within(int fd, const struct sockaddr_un *addr, double deadline) {
    for (int pause_ms = 1;; pause_ms = pause_ms < 32 ? pause_ms * 2 : 50) {
        if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) == 0) return 0;
        if (errno == EINPROGRESS) /* not seen on AF_UNIX, but allowed */
            break;
        if (errno != EAGAIN && errno != EINTR) return -1;
        double left = deadline - now_ms();
        if (left <= 0) return -1;
        poll(NULL, 0, left < pause_ms ? (int)left + 1 : pause_ms);
    }
    int error = 0;
    socklen_t size = sizeof error;
    if (wait_for(fd, POLLOUT, deadline) || getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) != 0
        || error != 0)
        return -1;
    return 0;
}

/* The Python hook, with the same arguments. Only returns if exec failed. */
static int fall_back(char **argv, int direct) {
    struct stat self, target;
    /* Built with VIPFLOAT_HOOK naming itself (or installed over it), it would
     * exec itself for ever: a transient error is the better failure. */
    if (stat("/proc/self/exe", &self) == 0 && stat(VIPFLOAT_HOOK, &target) == 0
        && self.st_dev == target.st_dev && self.st_ino == target.st_ino) {
        fprintf(stderr, "%s: ERROR %s is this program, not the Python hook: rebuild with "
                "PYTHON_HOOK=<its path>\n", program, VIPFLOAT_HOOK);
        return 1;
    }
    if (direct)
        setenv("VIPFLOAT_DIRECT", "1", 1);
    argv[0] = (char *)VIPFLOAT_HOOK;
    execv(VIPFLOAT_HOOK, argv);
    fprintf(stderr, "%s: ERROR cannot run %s: %s\n", program, VIPFLOAT_HOOK, strerror(errno));
    return 1; /* transient: Sentinel tries again later */
}

/* Under systemd, stderr is the journal already ($JOURNAL_STREAM names it):
 * syslog too would log every line twice. */
static int stderr_is_journal(void) {
    const char *stream = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (!stream || sscanf(stream, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) != 0)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

static void emit(int priority, const char *level, const char *line) {
    fprintf(stderr, "%s: %s %s\n", program, level, line);
    if (!stderr_is_journal() && access("/dev/log", F_OK) == 0) {
        openlog(program, LOG_PID, LOG_DAEMON);
        syslog(priority, "%s", line);
        closelog();
    }
}

/* Append s to out as a JSON string; 0 if it does not fit. */
static int json_string(char *out, size_t cap, size_t *len, const char *s) {
    char buf[8];
    if (*len + 1 >= cap) return 0;
    out[(*len)++] = '"';
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        const char *piece = buf;
        if (c == '"') piece = "\\\"";
        else if (c == '\\') piece = "\\\\";
        else if (c < 0x20) snprintf(buf, sizeof buf, "\\u%04x", c);
        else { buf[0] = (char)c; buf[1] = 0; }
        size_t n = strlen(piece);
        if (*len + n + 1 >= cap) return 0;
        memcpy(out + *len, piece, n);
        *len += n;
    }
    out[(*len)++] = '"';
    return 1;
}

/* The value of "message" in the agent's JSON answer, made ready to stand
 * between double quotes in a log line as the Python hook writes it: quotes and
 * backslashes escaped, control characters as spaces, \uXXXX outside ASCII as
 * '?'. */
static void json_message(const char *reply, char *out, size_t cap) {
    const char *p = strstr(reply, "\"message\"");
    size_t n = 0;
    out[0] = 0;
    if (!p || !(p = strchr(p + 9, '"'))) return;
    for (p++; *p && *p != '"' && n + 3 < cap; p++) {
        if (*p != '\\') { out[n++] = *p; continue; }
        p++;
        switch (*p) {
        case 'n': case 't': case 'r': out[n++] = ' '; break;
        case '"': case '\\': out[n++] = '\\'; out[n++] = *p; break;
        case 'u': {
            unsigned v = 0;
            if (sscanf(p + 1, "%4x", &v) == 1 && strlen(p + 1) >= 4) p += 4;
            out[n++] = v >= 0x20 && v < 0x7f ? (char)v : '?';
            break;
        }
        case 0: p--; break;
        default: out[n++] = *p;
        }
    }
    out[n] = 0;
}

int main(int argc, char **argv) {
    double started = now_ms();
    if (argc != 8 || strncmp(argv[1], "--config", 8) == 0 || strcmp(argv[1], "-h") == 0
        || strcmp(argv[1], "--help") == 0)
        return fall_back(argv, 0);

    const char *path = getenv("VIPFLOAT_SOCKET");
    if (!path || !*path) path = DEFAULT_SOCKET;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) return fall_back(argv, 0);
    strcpy(addr.sun_path, path);

    /* {"op": "hook", "argv": [...]}: the request vipfloat-hook sends. */
    char request[REQUEST_MAX];
    size_t len = 0;
    len += (size_t)snprintf(request, sizeof request, "{\"op\": \"hook\", \"argv\": [");
    for (int i = 1; i < argc; i++) {
        if (i > 1) request[len++] = ',';
        if (!json_string(request, sizeof request - 4, &len, argv[i])) return fall_back(argv, 0);
    }
    memcpy(request + len, "]}\n", 3);
    len += 3;

    /* Non-blocking from the start (no extra system call): an agent that
     * accepts at once costs nothing more than a blocking socket would. */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || connect_within(fd, &addr, started + CONNECT_TIMEOUT_MS) != 0) {
        if (fd >= 0) close(fd);
        return fall_back(argv, 0); /* no agent: act directly */
    }

    char reply[REPLY_MAX];
    size_t got = 0;
    const char *trouble = NULL;
    double deadline = started + ANSWER_TIMEOUT_MS;
    for (size_t sent = 0; sent < len && !trouble;) {
        ssize_t n = send(fd, request + sent, len - sent, MSG_NOSIGNAL);
        if (n > 0) sent += (size_t)n;
        else if (errno == EAGAIN) trouble = wait_for(fd, POLLOUT, deadline);
        else if (errno != EINTR) trouble = strerror(errno);
    }
    while (!trouble && (got == 0 || reply[got - 1] != '\n')) {
        if ((trouble = wait_for(fd, POLLIN, deadline))) break;
        if (got + 1 >= sizeof reply) { trouble = "answer too long"; break; }
        ssize_t n = recv(fd, reply + got, sizeof reply - 1 - got, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n <= 0) { trouble = n == 0 ? "connection closed" : strerror(errno); break; }
        got += (size_t)n;
    }
    close(fd);
    reply[got] = 0;

    const char *exit_field = trouble ? NULL : strstr(reply, "\"exit\":");
    char *end = NULL;
    long code = exit_field ? strtol(exit_field + 7, &end, 10) : -1;
    if (!trouble && (!exit_field || end == exit_field + 7 || code < 0 || code > 255))
        trouble = "answer without an exit code";
    if (trouble) {
        char line[512];
        snprintf(line, sizeof line, "agent on %s did not answer (%s): acting directly", path,
                 trouble);
        emit(LOG_WARNING, "WARNING", line);
        return fall_back(argv, 1);
    }

    char message[4096], line[8192];
    json_message(reply, message, sizeof message);
    /* The fields and quoting of the Python hook's line, so one grep finds both. */
    snprintf(line, sizeof line, "master=%s role=%s via=agent exit=%ld reason=\"%s\" duration_ms=%.1f",
             argv[1], argv[2], code, message, now_ms() - started);
    emit(code == 0 ? LOG_INFO : LOG_ERR, code == 0 ? "INFO" : "ERROR", line);
    return (int)code;
}
