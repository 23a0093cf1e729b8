/*
 * codec.h - the wire formats of the HTTP API, as pure functions (no I/O,
 * no allocation beyond the growable buffer), shared by the server, the CLI
 * and the fuzzer. The formats themselves are specified in docs/API.md.
 *
 * Every parser treats its input as untrusted bytes: a malformed input is a
 * negative return with a one-line reason, never a crash or a partial
 * result handed on.
 */
#ifndef BR_HTTP_CODEC_H
#define BR_HTTP_CODEC_H

#include <stddef.h>
#include <stdint.h>

/* A growable byte buffer. Zero-initialise; free p when done. */
typedef struct br_buf {
    char *p;
    size_t len, cap;
} br_buf;

/* Appends n bytes. Returns 0 or -1 (out of memory; buf unchanged). */
int br_buf_add(br_buf *b, const void *data, size_t n);
int br_buf_addc(br_buf *b, char c);
int br_buf_adds(br_buf *b, const char *s);

/*
 * Decodes percent-encoding strictly: %XX must have two hex digits. When
 * plus_space is nonzero, '+' becomes ' ' (query strings). out needs n
 * bytes; *outlen gets the decoded length. Returns 0, or -1 for a bad
 * escape (out holds nothing useful).
 */
int br_pct_decode(const char *in, size_t n, char *out, size_t *outlen, int plus_space);

/* Appends s percent-encoded (everything but unreserved characters). */
int br_pct_encode(br_buf *b, const void *s, size_t n);

/* Nonzero when s[0..n) is well-formed UTF-8 (no overlongs, no surrogates). */
int br_utf8_valid(const void *s, size_t n);

/* Appends s as a JSON string literal (quotes included); s must be UTF-8. */
int br_json_str(br_buf *b, const void *s, size_t n);

/* Appends s base64-encoded (RFC 4648, padded). */
int br_base64_enc(br_buf *b, const void *s, size_t n);

/* Decodes base64 (padded or not) into out (needs n bytes). -1 if bad. */
int br_base64_dec(const char *in, size_t n, char *out, size_t *outlen);

/* Parses a decimal number without sign or spaces. Returns 0 or -1. */
int br_parse_u64(const char *s, size_t n, uint64_t *out);

/* Integer-key mode: a decimal key 0..2^64-1 is stored as 8 bytes
 * big-endian, so bytewise order is numeric order. br_intkey_enc returns 0
 * or -1 (not such a number); br_intkey_dec writes the decimal form of an
 * 8-byte key into out (21 bytes) and returns its length, or 0 if klen != 8. */
int br_intkey_enc(const char *s, size_t n, char out[8]);
size_t br_intkey_dec(const void *key, size_t klen, char out[21]);

/* The operations a batch parser hands on, in order. */
enum { BR_OP_PUT = 1, BR_OP_DELETE = 2 };

/* Receives one operation; key/val are valid only during the call. A
 * nonzero return stops the parse and is returned. */
typedef int (*br_op_fn)(void *ctx, int op, const char *key, size_t klen, const char *val,
                        size_t vlen);

/*
 * The original's batch body: lines "key:K,value:V" or "K,V" (V is the rest
 * of the line; a trailing '\r' is dropped; empty lines are skipped). Every
 * line is checked before fn sees any (two passes), so a bad line means fn
 * was never called. Returns the number of operations (>= 1), or -1 with
 * err naming the line, or fn's nonzero return.
 */
int br_parse_kv_lines(const char *body, size_t n, br_op_fn fn, void *ctx, char *err, size_t errlen);

/*
 * The REST batch body: NDJSON, one object per line,
 *   {"op":"put","key":"K","value":"V"}  or  {"op":"delete","key":"K"}
 * with an optional "base64":true meaning key and value are base64. Same
 * all-or-nothing checking and returns as br_parse_kv_lines.
 */
int br_parse_ndjson_batch(const char *body, size_t n, br_op_fn fn, void *ctx, char *err,
                          size_t errlen);

/*
 * One line of a range reply: {"key":"K","value":"V"} or, when either is
 * not UTF-8, both base64 with "base64":true; or the continuation line
 * {"next":"K"} (same base64 rule). Parses the line at s[0..n) (no
 * newline). On success *is_next tells which, key/val point into scratch
 * (needs n bytes). Returns 0 or -1.
 */
int br_parse_range_line(const char *s, size_t n, char *scratch, const char **key, size_t *klen,
                        const char **val, size_t *vlen, int *is_next);

/* Appends one range line (with '\n'); val == NULL makes a {"next":..} line. */
int br_range_line(br_buf *b, const void *key, size_t klen, const void *val, size_t vlen);

#endif /* BR_HTTP_CODEC_H */
