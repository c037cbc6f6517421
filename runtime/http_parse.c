/*
 * http_parse.c: request heads and chunked bodies, as pure functions (see
 * http_parse.h). Lines end with CRLF; a bare LF is accepted as a line end,
 * as RFC 9112 allows, but a CR anywhere else is refused.
 */
#include "http_parse.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Printable text for a message: at most 40 bytes, odd bytes as '?'. */
static const char *shown(const char *p, size_t n, char *out, size_t outsz)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 4 < outsz && i < 40; i++)
        out[k++] = (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\') ? p[i] : '?';
    if (n > 40 && k + 4 < outsz) {
        memcpy(out + k, "...", 3);
        k += 3;
    }
    out[k] = '\0';
    return out;
}

static int fail(int *status, int code, char *msg, size_t msgsz, const char *fmt, const char *a,
                size_t alen)
{
    char s[64];
    *status = code;
    snprintf(msg, msgsz, fmt, a != NULL ? shown(a, alen, s, sizeof s) : "");
    return -1;
}

static bool eq_nocase(const char *p, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(p, lit, n) == 0;
}

/* Whether the comma-separated list p[0, n) holds token (case-insensitive). */
static bool list_has(const char *p, size_t n, const char *token)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == ','))
            i++;
        size_t s = i;
        while (i < n && p[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (p[e - 1] == ' ' || p[e - 1] == '\t'))
            e--;
        if (eq_nocase(p + s, e - s, token))
            return true;
    }
    return false;
}

const char *rt_http_find_header(const rt_http_head *head, const char *name, size_t *vlen)
{
    for (int i = 0; i < head->nh; i++)
        if (eq_nocase(head->h[i].name, head->h[i].nlen, name)) {
            *vlen = head->h[i].vlen;
            return head->h[i].value;
        }
    return NULL;
}

int rt_http_parse_head(const char *buf, size_t len, size_t max_head, rt_http_head *head,
                       int *status, char *msg, size_t msgsz)
{
    /* Find the blank line that ends the head before parsing anything, so
     * a partial head costs one scan per read rather than a parse. */
    size_t end = 0;
    bool found = false;
    for (size_t i = 0; i < len && i < max_head; i++)
        if (buf[i] == '\n' && ((i >= 1 && buf[i - 1] == '\n') ||
                               (i >= 2 && buf[i - 1] == '\r' && buf[i - 2] == '\n'))) {
            end = i + 1;
            found = true;
            break;
        }
    if (!found) {
        if (len >= max_head) {
            char m[32];
            snprintf(m, sizeof m, "%zu", max_head);
            return fail(status, 431, msg, msgsz,
                        "the request line and headers are larger than %s bytes", m, strlen(m));
        }
        return 0;
    }
    memset(head, 0, sizeof *head);
    head->content_length = -1;
    head->head_len = end;

    /* Request line: METHOD SP TARGET SP HTTP/1.x */
    size_t i = 0;
    size_t le = 0;
    while (buf[le] != '\n')
        le++;
    size_t lend = le > 0 && buf[le - 1] == '\r' ? le - 1 : le;
    const char *line = buf;
    if (lend == 0)
        return fail(status, 400, msg, msgsz, "the request line is empty%s", NULL, 0);
    while (i < lend && is_tchar((unsigned char)line[i]))
        i++;
    if (i == 0 || i >= lend || line[i] != ' ' || i > 20)
        return fail(status, 400, msg, msgsz,
                    "malformed request line \"%s\": expected METHOD /path HTTP/1.1", line, lend);
    head->method = line;
    head->mlen = i;
    size_t ts = ++i;
    while (i < lend && line[i] != ' ') {
        unsigned char c = (unsigned char)line[i];
        if (c <= 0x20 || c == 0x7f)
            return fail(status, 400, msg, msgsz,
                        "the request target in \"%s\" holds a control character", line, lend);
        i++;
    }
    if (i == ts || i >= lend)
        return fail(status, 400, msg, msgsz,
                    "malformed request line \"%s\": expected METHOD /path HTTP/1.1", line, lend);
    head->target = line + ts;
    head->tlen = i - ts;
    if (head->target[0] != '/')
        return fail(status, 400, msg, msgsz,
                    "request target \"%s\" is not a path starting with \"/\"", head->target,
                    head->tlen);
    const char *ver = line + i + 1;
    size_t vlen = lend - i - 1;
    if (vlen != 8 || memcmp(ver, "HTTP/", 5) != 0 || ver[6] != '.' || ver[5] < '0' ||
        ver[5] > '9' || ver[7] < '0' || ver[7] > '9')
        return fail(status, 400, msg, msgsz, "malformed HTTP version \"%s\"", ver, vlen);
    if (ver[5] != '1' || (ver[7] != '0' && ver[7] != '1'))
        return fail(status, 505, msg, msgsz,
                    "HTTP version \"%s\" is not supported; use HTTP/1.1", ver, vlen);
    head->minor = ver[7] - '0';

    /* Header fields. */
    bool connection_close = false, connection_keep = false, has_host = false;
    size_t p = le + 1;
    while (p < end) {
        size_t e = p;
        while (buf[e] != '\n')
            e++;
        size_t ve = e > p && buf[e - 1] == '\r' ? e - 1 : e;
        if (ve == p)
            break; /* the blank line */
        const char *h = buf + p;
        size_t hl = ve - p;
        if (h[0] == ' ' || h[0] == '\t')
            return fail(status, 400, msg, msgsz,
                        "folded header line \"%s\" (obsolete line folding is not accepted)", h, hl);
        size_t n = 0;
        while (n < hl && is_tchar((unsigned char)h[n]))
            n++;
        if (n == 0 || n >= hl || h[n] != ':')
            return fail(status, 400, msg, msgsz, "malformed header line \"%s\": expected Name: value",
                        h, hl);
        size_t vs = n + 1;
        while (vs < hl && (h[vs] == ' ' || h[vs] == '\t'))
            vs++;
        size_t vend = hl;
        while (vend > vs && (h[vend - 1] == ' ' || h[vend - 1] == '\t'))
            vend--;
        for (size_t k = vs; k < vend; k++) {
            unsigned char c = (unsigned char)h[k];
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                return fail(status, 400, msg, msgsz,
                            "header \"%s\" holds a control character", h, n);
        }
        if (head->nh == RT_HTTP_MAX_HEADERS) {
            char m[16];
            snprintf(m, sizeof m, "%d", RT_HTTP_MAX_HEADERS);
            return fail(status, 431, msg, msgsz, "more than %s header fields", m, strlen(m));
        }
        rt_http_header *f = &head->h[head->nh++];
        f->name = h;
        f->nlen = n;
        f->value = h + vs;
        f->vlen = vend - vs;
        if (eq_nocase(h, n, "Content-Length")) {
            long long v = 0;
            if (f->vlen == 0 || f->vlen > 18)
                return fail(status, 400, msg, msgsz, "Content-Length \"%s\" is not a byte count",
                            f->value, f->vlen);
            for (size_t k = 0; k < f->vlen; k++) {
                if (f->value[k] < '0' || f->value[k] > '9')
                    return fail(status, 400, msg, msgsz,
                                "Content-Length \"%s\" is not a byte count", f->value, f->vlen);
                v = v * 10 + (f->value[k] - '0');
            }
            if (head->content_length >= 0 && head->content_length != v)
                return fail(status, 400, msg, msgsz,
                            "two different Content-Length headers (the second is \"%s\"); send one",
                            f->value, f->vlen);
            head->content_length = v;
        } else if (eq_nocase(h, n, "Transfer-Encoding")) {
            if (!eq_nocase(f->value, f->vlen, "chunked"))
                return fail(status, 501, msg, msgsz,
                            "Transfer-Encoding \"%s\" is not supported; use chunked or a "
                            "Content-Length", f->value, f->vlen);
            if (head->chunked)
                return fail(status, 400, msg, msgsz, "Transfer-Encoding \"%s\" is given twice",
                            f->value, f->vlen);
            head->chunked = true;
        } else if (eq_nocase(h, n, "Connection")) {
            connection_close |= list_has(f->value, f->vlen, "close");
            connection_keep |= list_has(f->value, f->vlen, "keep-alive");
        } else if (eq_nocase(h, n, "Expect")) {
            if (!eq_nocase(f->value, f->vlen, "100-continue"))
                return fail(status, 417, msg, msgsz,
                            "Expect: \"%s\" is not supported; only 100-continue is", f->value,
                            f->vlen);
            head->expect_continue = true;
        } else if (eq_nocase(h, n, "Host")) {
            if (has_host)
                return fail(status, 400, msg, msgsz, "two Host headers (the second is \"%s\")",
                            f->value, f->vlen);
            has_host = true;
        }
        p = e + 1;
    }
    if (head->chunked && head->content_length >= 0)
        return fail(status, 400, msg, msgsz,
                    "both Transfer-Encoding: chunked and Content-Length: send one of them%s", NULL,
                    0);
    if (head->chunked && head->minor == 0)
        return fail(status, 400, msg, msgsz,
                    "Transfer-Encoding is not allowed in an HTTP/1.0 request%s", NULL, 0);
    if (head->minor == 1 && !has_host)
        return fail(status, 400, msg, msgsz, "an HTTP/1.1 request needs a Host header%s", NULL, 0);
    head->keep_alive = head->minor == 1 ? !connection_close : (connection_keep && !connection_close);
    return 1;
}

enum { CK_SIZE, CK_EXT, CK_SIZE_LF, CK_DATA, CK_DATA_CR, CK_DATA_LF, CK_TRAILER, CK_TRAILER_LINE };

#define MAX_TRAILER 8192

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long rt_chunked_decode(rt_chunked *d, const char *in, size_t n, const char **data, size_t *dlen,
                       char *msg, size_t msgsz)
{
    *data = NULL;
    *dlen = 0;
    size_t i = 0;
    while (i < n && !d->done) {
        char c = in[i];
        switch (d->state) {
        case CK_SIZE: {
            int v = hexval(c);
            if (v >= 0) {
                if (++d->digits > 15) {
                    snprintf(msg, msgsz, "chunk size with more than 15 hex digits");
                    return -1;
                }
                d->left = d->left * 16 + (unsigned)v;
            } else if (d->digits > 0 && (c == ';' || c == ' ' || c == '\t')) {
                d->state = CK_EXT;
            } else if (d->digits > 0 && c == '\r') {
                d->state = CK_SIZE_LF;
            } else if (d->digits > 0 && c == '\n') {
                d->state = d->left > 0 ? CK_DATA : CK_TRAILER;
            } else {
                snprintf(msg, msgsz, "bad chunk size: byte 0x%02x where a hex digit belongs",
                         (unsigned char)c);
                return -1;
            }
            i++;
            break;
        }
        case CK_EXT:
            /* Chunk extensions are skipped, within the trailer budget. */
            if (++d->trailer > MAX_TRAILER) {
                snprintf(msg, msgsz, "chunk extensions longer than %d bytes", MAX_TRAILER);
                return -1;
            }
            if (c == '\r')
                d->state = CK_SIZE_LF;
            else if (c == '\n')
                d->state = d->left > 0 ? CK_DATA : CK_TRAILER;
            i++;
            break;
        case CK_SIZE_LF:
            if (c != '\n') {
                snprintf(msg, msgsz, "bad chunk size line: CR not followed by LF");
                return -1;
            }
            d->state = d->left > 0 ? CK_DATA : CK_TRAILER;
            i++;
            break;
        case CK_DATA: {
            size_t take = n - i;
            if (take > d->left)
                take = (size_t)d->left;
            d->left -= take;
            if (d->left == 0)
                d->state = CK_DATA_CR;
            *data = in + i;
            *dlen = take;
            return (long)(i + take);
        }
        case CK_DATA_CR:
            if (c == '\n') {
                d->state = CK_SIZE;
                d->digits = 0;
            } else if (c == '\r') {
                d->state = CK_DATA_LF;
            } else {
                snprintf(msg, msgsz, "chunk data longer than its size (byte 0x%02x where CRLF "
                         "belongs)", (unsigned char)c);
                return -1;
            }
            i++;
            break;
        case CK_DATA_LF:
            if (c != '\n') {
                snprintf(msg, msgsz, "bad chunk end: CR not followed by LF");
                return -1;
            }
            d->state = CK_SIZE;
            d->digits = 0;
            i++;
            break;
        case CK_TRAILER:
            /* At the start of a trailer line: an empty one ends the body. */
            if (c == '\n') {
                d->done = true;
            } else if (c != '\r') {
                d->state = CK_TRAILER_LINE;
                d->trailer++;
            }
            i++;
            break;
        case CK_TRAILER_LINE:
            if (++d->trailer > MAX_TRAILER) {
                snprintf(msg, msgsz, "chunked trailer longer than %d bytes", MAX_TRAILER);
                return -1;
            }
            if (c == '\n')
                d->state = CK_TRAILER;
            i++;
            break;
        }
    }
    return (long)i;
}
