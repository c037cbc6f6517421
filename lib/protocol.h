/*
 * protocol.h: the HTTP protocol between a client (lib/) and the runtime
 * (runtime/), written once for both sides: the API's paths, the header
 * names, the content types, the frame version, the id prefixes and the
 * checks of every id and name that crosses the wire. docs/wire.md and
 * docs/runtime.md describe what these mean; this header is where their
 * spelling lives. Nothing here is public API.
 *
 * The runtime's route table (runtime/http.c) is built from the path
 * macros below, and the client formats its request paths from the same
 * macros, so a path cannot drift between the two sides.
 */
#ifndef MODAL_PROTOCOL_H
#define MODAL_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>

/* ---- paths ---------------------------------------------------------- */

/* Resources; an id follows as one more segment ("/v1/calls/<id>"). */
#define MODAL__PATH_HEALTH    "/v1/health"
#define MODAL__PATH_CALLS     "/v1/calls"
#define MODAL__PATH_MAPS      "/v1/maps"
#define MODAL__PATH_ARTIFACTS "/v1/artifacts"
#define MODAL__PATH_APPS      "/v1/apps"
#define MODAL__PATH_FUNCTIONS "/v1/functions"
/* Sub-resources, after the id. */
#define MODAL__PATH_LOGS      "/logs"
#define MODAL__PATH_INPUTS    "/inputs"
#define MODAL__PATH_RESULTS   "/results"
/* The message prefix of the runtime's refusal of an unknown spec id: the
 * client registers the spec again when it reads it. */
#define MODAL__SPEC_UNKNOWN   "unknown function spec"

/* ---- headers -------------------------------------------------------- */

#define MODAL__H_AUTH         "Authorization"
/* The scheme before the token in MODAL__H_AUTH, with its space. */
#define MODAL__AUTH_BEARER    "Bearer "
#define MODAL__H_CTYPE        "Content-Type"
/* Bytes of output the call has made so far (call results). */
#define MODAL__H_LOG_SIZE     "X-Modal-Log-Size"
/* The sequence number of the last result in a map results bundle. */
#define MODAL__H_SEQ          "X-Modal-Seq"

/* ---- content types -------------------------------------------------- */

#define MODAL__CT_FRAME       "application/x-modal-frame"
#define MODAL__CT_BUNDLE      "application/x-modal-bundle"
#define MODAL__CT_JSON        "application/json"
#define MODAL__CT_TEXT        "text/plain; charset=utf-8"
#define MODAL__CT_BINARY      "application/octet-stream"

/* ---- frames --------------------------------------------------------- */

/* The "v" of every call, map, input and result envelope. */
#define MODAL__FRAME_VERSION  1
/* The first four bytes of a bundle of frames. */
#define MODAL__BUNDLE_MAGIC   "MODB"

/* ---- ids and names -------------------------------------------------- */

/*
 * Call and map ids are a prefix and MODAL__ID_RANDOM_LEN characters of
 * MODAL__ID_ALPHABET (Crockford's base32, lowercase: no i, l, o, u).
 */
#define MODAL__CALL_ID_PREFIX "fc-"
#define MODAL__MAP_ID_PREFIX  "fm-"
#define MODAL__ID_ALPHABET    "0123456789abcdefghjkmnpqrstvwxyz"
#define MODAL__ID_RANDOM_LEN  26
/* How the id rule reads in an error message. */
#define MODAL__ID_RULE        "followed by 26 characters of 0-9 and a-z without i, l, o and u"
/* Longest app or function name. */
#define MODAL__NAME_MAX 127

/*
 * The checks of what crosses the wire, for the library and the runtime
 * alike. Each returns NULL for a valid value, else a phrase that completes
 * a sentence naming the value ("\"x\" is not fc- followed by ..."):
 *
 * - a call id: MODAL__CALL_ID_PREFIX and the random part;
 * - a map id: MODAL__MAP_ID_PREFIX and the random part;
 * - an artifact id: the SHA-256 of an executable, 64 lowercase hex digits;
 * - an app name: 1 to 127 of A-Z a-z 0-9 _ . -, neither "." nor ".." (an
 *   app's log is a file named after it);
 * - a function name: a C identifier of 1 to 127 characters.
 *
 * NULL is refused by each.
 */
const char *modal__call_id_problem(const char *id);
const char *modal__map_id_problem(const char *id);
const char *modal__artifact_problem(const char *sha);
const char *modal__app_name_problem(const char *name);
const char *modal__fn_name_problem(const char *name);
/* Whether c may stand in an app name. */
bool modal__app_name_char(unsigned char c);

#endif /* MODAL_PROTOCOL_H */
