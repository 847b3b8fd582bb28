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
 *     is another one. The connect is non-blocking because a blocking one to a
 *     listener whose queue is full (an agent stuck, or not accepting yet)
 *     waits until it accepts, maybe never: Sentinel would kill the script at
 *     60 s, before any fall-back. A full AF_UNIX queue answers EAGAIN at once,
 *     so it tries again after short pauses until the 500 ms are up; an agent
 *     that accepts at once costs no extra system call;
 *   - the agent took the request but gave no usable answer within 30 s of the
 *     start (sending, and reading an answer that is too long or trickles in,
 *     all count against that one deadline): exec with VIPFLOAT_DIRECT=1, so the
 *     Python hook does not wait for it a second time (Sentinel kills a script
 *     after 60 s);
 *   - --config or an argument count other than 7: the Python hook parses the
 *     config or reports the usage error (exit 2).
 *
 * Except with VIPFLOAT_HANDOVER_ONLY=1, which the default Sentinel systemd
 * drop-in sets: there Sentinel and this hook hold no capabilities and only the
 * agent can move a VIP, so the Python hook could only fail at acting. Without a
 * usable answer the hook logs one ERROR line and exits 1 instead: Sentinel runs
 * it again, and an agent reconciles the VIP with Sentinel when it starts. Usage
 * errors still go to the Python hook, which acts on nothing before parsing.
 *
 * Exit codes are the Python hook's: 0 done, 1 transient (Sentinel retries), 2 no
 * retry. One line goes to stderr and, unless stderr is already the journal, to
 * syslog, as the Python hook logs it: every value in it (master, role, socket
 * path, the agent's message) escaped as vipfloat.logs.fields escapes it, since
 * whoever can name a master or a role could otherwise forge log lines.
 *
 * Socket: $VIPFLOAT_SOCKET, else /run/vipfloat/agent.sock. The Python hook it
 * falls back to is fixed at build time (-DVIPFLOAT_HOOK=...); see the Makefile.
 */
#define _GNU_SOURCE
#include <ctype.h>
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
/* The agent answers within its hook_timeout (default 10 s, at most 30 s: this
 * program cannot read the config, so it waits for the longest); past this we
 * act directly, the direct path's lock wait and retries still inside Sentinel's
 * 60 s kill. From the start, for the whole exchange. A build option only so the
 * tests can wait less. */
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

/* Connect the non-blocking fd by the deadline: NULL once connected, else why
 * not. An AF_UNIX listener whose queue is full answers EAGAIN at once (where a
 * blocking connect would wait for an accept that may never come, past
 * Sentinel's kill): try again after short, growing pauses. */
static const char *connect_within(int fd, const struct sockaddr_un *addr, double deadline) {
    for (int pause_ms = 1;; pause_ms = pause_ms < 32 ? pause_ms * 2 : 50) {
        if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) == 0) return NULL;
        if (errno != EAGAIN) return strerror(errno);
        double left = deadline - now_ms();
        if (left <= 0) return "listen queue full: not accepted in time";
        poll(NULL, 0, left < pause_ms ? (int)left + 1 : pause_ms);
    }
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

/* Four hex digits at p as a number, or -1. */
static long hex4(const char *p) {
    long v = 0;
    for (int i = 0; i < 4; i++) {
        if (!isxdigit((unsigned char)p[i])) return -1;
        v = v * 16 + (isdigit((unsigned char)p[i]) ? p[i] - '0' : (p[i] | 0x20) - 'a' + 10);
    }
    return v;
}

/* Code point v as UTF-8 into out (room for 4 bytes); returns its length. */
static size_t utf8(char *out, long v) {
    static const unsigned char lead[] = {0, 0, 0xc0, 0xe0, 0xf0};
    size_t n = v < 0x80 ? 1 : v < 0x800 ? 2 : v < 0x10000 ? 3 : 4;
    for (size_t i = n - 1; i > 0; i--, v >>= 6) out[i] = (char)(0x80 | (v & 0x3f));
    out[0] = (char)(lead[n] | v);
    return n;
}

/* The value of "message" in the agent's JSON answer, decoded as json.loads
 * gives it to the Python hook: n bytes into out (any byte, NUL included; cut at
 * cap), n returned. \uXXXX becomes UTF-8, a surrogate pair one code point, a
 * lone surrogate '?'. Escaping it for the log is put_value's job. */
static size_t json_message(const char *reply, char *out, size_t cap) {
    const char *p = strstr(reply, "\"message\"");
    size_t n = 0;
    if (!p) return 0;
    p += 9 + strspn(p + 9, " \t\r\n");
    if (*p++ != ':') return 0;
    p += strspn(p, " \t\r\n");
    if (*p != '"') return 0;
    for (p++; *p && *p != '"' && n + 4 <= cap; p++) {
        if (*p != '\\') { out[n++] = *p; continue; }
        switch (*++p) {
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'n': out[n++] = '\n'; break;
        case 'r': out[n++] = '\r'; break;
        case 't': out[n++] = '\t'; break;
        case 'u': {
            long v = hex4(p + 1), low = -1;
            if (v < 0) { out[n++] = '?'; break; }
            p += 4;
            if (v >= 0xd800 && v < 0xdc00 && p[1] == '\\' && p[2] == 'u') low = hex4(p + 3);
            if (low >= 0xdc00 && low < 0xe000) {
                v = 0x10000 + ((v - 0xd800) << 10) + (low - 0xdc00);
                p += 6;
            } else if (v >= 0xd800 && v < 0xe000) {
                v = '?';
            }
            n += utf8(out + n, v);
            break;
        }
        case 0: p--; break;
        default: out[n++] = *p; /* \" \\ \/ */
        }
    }
    return n;
}

/* A log line being written; what does not fit is cut and marked "...". */
struct line {
    char text[8192];
    size_t len;
    int cut;
};

static void put(struct line *l, const char *s, size_t n) {
    if (l->cut) return;
    if (l->len + n + 4 > sizeof l->text) { /* room for "..." and the NUL is kept */
        s = "...", n = 3;
        l->cut = 1;
    }
    memcpy(l->text + l->len, s, n);
    l->len += n;
    l->text[l->len] = 0;
}

static void put_text(struct line *l, const char *s) { put(l, s, strlen(s)); }

/* The length of the well-formed UTF-8 character at s (n bytes left), or 0. */
static size_t utf8_length(const unsigned char *s, size_t n) {
    size_t len = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 && s[0] < 0xe0 ? 2 : 0;
    if (len == 0 || len > n) return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    /* overlong, surrogate and beyond-U+10FFFF forms */
    if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0)
        || (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] >= 0x90))
        return 0;
    return len;
}

/* Python's str.isspace() beyond ASCII, in UTF-8 at s (n bytes left): U+0085,
 * U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000. */
static int wide_space(const unsigned char *s, size_t n) {
    if (n >= 2 && s[0] == 0xc2) return s[1] == 0x85 || s[1] == 0xa0;
    unsigned long v = n >= 3 ? (unsigned long)s[0] << 16 | s[1] << 8 | s[2] : 0;
    return v == 0xe19a80 || (v >= 0xe28080 && v <= 0xe2808a) || v == 0xe280a8 || v == 0xe280a9
        || v == 0xe280af || v == 0xe2819f || v == 0xe38080;
}

/* One value of a log line (n bytes at value), rendered exactly as the Python
 * hook's vipfloat.logs.fields renders it, so one grep finds both hooks' lines.
 * Master, role, socket path and the agent's message are anyone's text: raw, a
 * newline in one would end the line and forge the next (on stderr and in
 * syslog), an ESC would drive the terminal of whoever reads the log. So: \ and
 * " are backslashed, bytes below 0x20 and 0x7f become \xNN, bytes from 0x80
 * pass as they are (UTF-8 stays readable); then an empty value is "-", and one
 * holding a space, a quote or other whitespace goes between double quotes. */
static void put_value(struct line *l, const char *value, size_t n) {
    const unsigned char *s = (const unsigned char *)value;
    int quote = 0;
    char piece[8];
    if (n == 0) { put(l, "-", 1); return; }
    for (size_t i = 0; i < n; i++)
        quote |= s[i] == ' ' || s[i] == '"' || wide_space(s + i, n - i);
    if (quote) put(l, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' || s[i] == '"') snprintf(piece, sizeof piece, "\\%c", s[i]);
        else if (s[i] < 0x20 || s[i] == 0x7f) snprintf(piece, sizeof piece, "\\x%02x", s[i]);
        /* C1 controls (U+0080-U+009F, UTF-8 C2 80-9F) and the line and paragraph
         * separators (U+2028/9, E2 80 A8/A9): terminals and some log viewers
         * act on them too. Escaped as the Python side does: \xNN, \uNNNN. */
        else if (s[i] == 0xc2 && i + 1 < n && s[i + 1] >= 0x80 && s[i + 1] <= 0x9f)
            snprintf(piece, sizeof piece, "\\x%02x", s[++i]);
        else if (s[i] == 0xe2 && i + 2 < n && s[i + 1] == 0x80 && (s[i + 2] == 0xa8 || s[i + 2] == 0xa9)) {
            snprintf(piece, sizeof piece, "\\u%04x", 0x2000 + (s[i + 2] - 0xa8) + 0x28);
            i += 2;
        }
        else if (s[i] >= 0x80) {
            /* A whole UTF-8 character passes as it is; a byte that is not part of
             * one (0x9b alone is a terminal's CSI) is \udcNN, as Python writes the
             * surrogate its argv decoding makes of it. */
            size_t len = utf8_length(s + i, n - i);
            if (len == 0) snprintf(piece, sizeof piece, "\\udc%02x", s[i]);
            else { put(l, (const char *)s + i, len); i += len - 1; continue; }
        }
        else snprintf(piece, sizeof piece, "%c", s[i]);
        put_text(l, piece);
    }
    if (quote) put(l, "\"", 1);
}

/* No verdict from the agent on path, for the reason why; took: it took the
 * request. Normally the Python hook acts instead. Under VIPFLOAT_HANDOVER_ONLY=1
 * (the default Sentinel drop-in: Sentinel and this hook hold no capabilities,
 * only the agent can move a VIP) acting could only fail, and half-way, so
 * exit 1: Sentinel runs the script again, and an agent reconciles the VIP with
 * Sentinel when it starts anyway. */
static int handover_only(void);

static int without_verdict(char **argv, const char *path, const char *why, int took) {
    struct line line = {.len = 0};
    if (handover_only()) {
        put_text(&line, "no agent answered on ");
        put_value(&line, path, strlen(path));
        put_text(&line, " (");
        put_value(&line, why, strlen(why));
        put_text(&line, ") and this hook may only hand over (VIPFLOAT_HANDOVER_ONLY=1): exit 1 "
                 "so Sentinel retries; the agent reconciles when it starts");
        emit(LOG_ERR, "ERROR", line.text);
        return 1;
    }
    if (!took) return fall_back(argv, 0); /* no agent: act directly, quietly */
    put_text(&line, "agent on ");
    put_value(&line, path, strlen(path));
    put_text(&line, " did not answer (");
    put_value(&line, why, strlen(why));
    put_text(&line, "): acting directly");
    emit(LOG_WARNING, "WARNING", line.text);
    return fall_back(argv, 1);
}

static int handover_only(void) {
    const char *only = getenv("VIPFLOAT_HANDOVER_ONLY");
    return only && strcmp(only, "1") == 0;
}

/* Under VIPFLOAT_HANDOVER_ONLY=1 the Python hook cannot be run (the default
 * drop-in lets Sentinel execute this program only), so a call that can never
 * succeed is reported here: exit 2, and Sentinel does not retry it for ever. */
static int usage_error(const char *why) {
    struct line line = {.len = 0};
    put_text(&line, why);
    put_text(&line, "; usage: vipfloat-hook <master-name> <role> <state> <from-ip> "
             "<from-port> <to-ip> <to-port>");
    emit(LOG_ERR, "ERROR", line.text);
    return 2;
}

int main(int argc, char **argv) {
    double started = now_ms();
    int usage = argc != 8 || strncmp(argv[1], "--config", 8) == 0 || strcmp(argv[1], "-h") == 0
        || strcmp(argv[1], "--help") == 0;
    if (usage && !handover_only())
        return fall_back(argv, 0);
    if (usage && argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        puts("usage: vipfloat-hook <master-name> <role> <state> <from-ip> <from-port> <to-ip> "
             "<to-port>");
        return 0;
    }
    if (usage)
        return usage_error("expected Sentinel's 7 arguments (and no --config: this hook only "
                           "hands over to the agent)");

    const char *path = getenv("VIPFLOAT_SOCKET");
    if (!path || !*path) path = DEFAULT_SOCKET;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path)
        return without_verdict(argv, path, "socket path too long", 0);
    strcpy(addr.sun_path, path);

    /* {"op": "hook", "argv": [...]}: the request vipfloat-hook sends. */
    char request[REQUEST_MAX];
    size_t len = 0;
    len += (size_t)snprintf(request, sizeof request, "{\"op\": \"hook\", \"argv\": [");
    for (int i = 1; i < argc; i++) {
        if (i > 1) request[len++] = ',';
        if (!json_string(request, sizeof request - 4, &len, argv[i]))
            return handover_only() ? usage_error("arguments too long to hand over")
                                   : without_verdict(argv, path, "arguments too long to hand over", 0);
    }
    memcpy(request + len, "]}\n", 3);
    len += 3;

    /* Non-blocking from the start (no extra system call): an agent that
     * accepts at once costs nothing more than a blocking socket would. */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    const char *trouble = fd < 0 ? strerror(errno)
                                 : connect_within(fd, &addr, started + CONNECT_TIMEOUT_MS);
    if (trouble) {
        if (fd >= 0) close(fd);
        return without_verdict(argv, path, trouble, 0);
    }

    char reply[REPLY_MAX];
    size_t got = 0;
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
    if (!trouble && (!exit_field || end == exit_field + 7 || code < 0 || code > 2))
        trouble = "answer without an exit code";
    if (trouble) return without_verdict(argv, path, trouble, 1);

    /* The Python hook's fields, so one grep finds both. */
    struct line line = {.len = 0};
    char message[4096], number[64];
    put_text(&line, "master=");
    put_value(&line, argv[1], strlen(argv[1]));
    put_text(&line, " role=");
    put_value(&line, argv[2], strlen(argv[2]));
    snprintf(number, sizeof number, " via=agent exit=%ld reason=", code);
    put_text(&line, number);
    put_value(&line, message, json_message(reply, message, sizeof message));
    snprintf(number, sizeof number, " duration_ms=%.1f", now_ms() - started);
    put_text(&line, number);
    emit(code == 0 ? LOG_INFO : LOG_ERR, code == 0 ? "INFO" : "ERROR", line.text);
    return (int)code;
}
