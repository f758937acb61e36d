/*
 * util.c - error names, the default allocator, assertion failure reporting.
 */
#include "internal.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

struct kvb_errdesc {
    int err;
    const char *name;
    const char *text;
};

static const struct kvb_errdesc kvb_errs[] = {
    {0, "OK", "OK: success"},
    {EINVAL, "EINVAL", "EINVAL: invalid argument"},
    {ENOSPC, "ENOSPC", "ENOSPC: not enough free or evictable blocks"},
    {ENOENT, "ENOENT", "ENOENT: not found"},
    {EBUSY, "EBUSY", "EBUSY: still in use"},
    {ESTALE, "ESTALE", "ESTALE: stale, released or foreign handle"},
    {EOVERFLOW, "EOVERFLOW", "EOVERFLOW: position or reference count limit exceeded"},
    {ENOMEM, "ENOMEM", "ENOMEM: out of memory"},
    {ENODEV, "ENODEV", "ENODEV: no such device"},
    {ENOTSUP, "ENOTSUP", "ENOTSUP: not supported"},
    {EEXIST, "EEXIST", "EEXIST: already exists"},
    {ERANGE, "ERANGE", "ERANGE: index out of range"},
    {E2BIG, "E2BIG", "E2BIG: more than the configured maximum"},
    {EFAULT, "EFAULT", "EFAULT: internal invariant violated"},
    {EAGAIN, "EAGAIN", "EAGAIN: try again"},
    {EIO, "EIO", "EIO: device or I/O error"},
    {EBADMSG, "EBADMSG", "EBADMSG: malformed message or corrupt snapshot"},
    {ETIMEDOUT, "ETIMEDOUT", "ETIMEDOUT: timed out"},
    {EADDRINUSE, "EADDRINUSE", "EADDRINUSE: address already in use"},
    {ECONNREFUSED, "ECONNREFUSED", "ECONNREFUSED: connection refused"},
    {ECONNRESET, "ECONNRESET", "ECONNRESET: connection reset by peer"},
    {EACCES, "EACCES", "EACCES: permission denied"},
    {EALREADY, "EALREADY", "EALREADY: already done"},
    {EPROTO, "EPROTO", "EPROTO: protocol error"},
    {EPERM, "EPERM", "EPERM: operation not permitted"},
};

static const struct kvb_errdesc *kvb_err_find(int err)
{
    if (err < 0)
        err = -err;
    for (size_t i = 0; i < sizeof kvb_errs / sizeof kvb_errs[0]; i++)
        if (kvb_errs[i].err == err)
            return &kvb_errs[i];
    return NULL;
}

const char *kvb_strerror(int err)
{
    const struct kvb_errdesc *d = kvb_err_find(err);
    return d ? d->text : "unknown error";
}

const char *kvb_err_name(int err)
{
    const struct kvb_errdesc *d = kvb_err_find(err);
    return d ? d->name : "EUNKNOWN";
}

static void *kvb_default_alloc(void *ctx, size_t size)
{
    (void)ctx;
    return malloc(size);
}

static void kvb_default_free(void *ctx, void *p, size_t size)
{
    (void)ctx;
    (void)size;
    free(p);
}

void kvb__allocator_fill(kvb_allocator *a)
{
    if (!a->alloc || !a->free) {
        a->alloc = kvb_default_alloc;
        a->free = kvb_default_free;
        a->ctx = NULL;
    }
}

void kvb__assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "kvblock: internal assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}

void kvb__out_printf(struct kvb__out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *dst = o->len < o->cap ? o->buf + o->len : NULL;
    size_t room = o->len < o->cap ? o->cap - o->len : 0;
    int n = vsnprintf(dst, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n;
}

void kvb__prom_escape(const char *in, char *out, size_t cap)
{
    size_t j = 0;
    for (; *in && j + 2 < cap; in++) { /* room for two bytes and the NUL */
        if (*in == '\\' || *in == '"') {
            out[j++] = '\\';
            out[j++] = *in;
        } else if (*in == '\n') {
            out[j++] = '\\';
            out[j++] = 'n';
        } else {
            out[j++] = *in;
        }
    }
    out[j] = 0;
}
