/*
 * value.c: the modal_value tree: constructors, containers, deep copy,
 * equality, type-checked accessors, and the borrowed variants the decoder
 * uses so large payloads are not copied.
 *
 * Every allocation goes through the modal__ wrappers so the failure
 * injection tests can prove that each constructor fails cleanly. Copy,
 * equality and free recurse over the tree: the codec refuses trees deeper
 * than MODAL_MAX_DEPTH, so only a tree built by hand to an extreme depth
 * could use much stack, and such a tree could not be sent anyway.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/*
 * Where a zero-length borrowed payload points when the decoder passes NULL,
 * so that accessors hand out a non-NULL pointer for every bytes value and
 * array, as they do for owned ones (which always hold at least one byte).
 */
static uint8_t empty_payload[1];

/* ---- names and sizes --------------------------------------------- */

const char *modal_type_name(modal_type type)
{
    switch (type) {
    case MODAL_TYPE_NULL:
        return "null";
    case MODAL_TYPE_BOOL:
        return "bool";
    case MODAL_TYPE_INT:
        return "int";
    case MODAL_TYPE_FLOAT:
        return "float";
    case MODAL_TYPE_STRING:
        return "string";
    case MODAL_TYPE_BYTES:
        return "bytes";
    case MODAL_TYPE_ARRAY:
        return "array";
    case MODAL_TYPE_LIST:
        return "list";
    case MODAL_TYPE_MAP:
        return "map";
    }
    return "invalid";
}

/*
 * The type's name with its article, for messages that read as a sentence
 * ("expected an int, got a string").
 */
static const char *type_phrase(modal_type type)
{
    switch (type) {
    case MODAL_TYPE_NULL:
        return "null";
    case MODAL_TYPE_BOOL:
        return "a bool";
    case MODAL_TYPE_INT:
        return "an int";
    case MODAL_TYPE_FLOAT:
        return "a float";
    case MODAL_TYPE_STRING:
        return "a string";
    case MODAL_TYPE_BYTES:
        return "bytes";
    case MODAL_TYPE_ARRAY:
        return "an array";
    case MODAL_TYPE_LIST:
        return "a list";
    case MODAL_TYPE_MAP:
        return "a map";
    }
    return "an invalid value";
}

/* An enum may hold any int, so range checks go through int. */
static int dtype_valid(modal_dtype dtype)
{
    return (int)dtype >= (int)MODAL_U8 && (int)dtype <= (int)MODAL_F64;
}

const char *modal_dtype_name(modal_dtype dtype)
{
    static const char *const names[] = {"u8",  "i8",  "i32", "u32",
                                        "i64", "u64", "f32", "f64"};
    return dtype_valid(dtype) ? names[dtype] : "invalid";
}

size_t modal_dtype_size(modal_dtype dtype)
{
    static const size_t sizes[] = {1, 1, 4, 4, 8, 8, 4, 8};
    return dtype_valid(dtype) ? sizes[dtype] : 0;
}

/* "an f32" but "a u8": the article follows how the name is spoken. */
static const char *dtype_article(modal_dtype dtype)
{
    const char *name = modal_dtype_name(dtype);
    return name[0] == 'u' ? "a" : "an";
}

int modal__dtype_parse(const char *name)
{
    if (name == NULL)
        return -1;
    for (int d = MODAL_U8; d <= MODAL_F64; d++) {
        if (strcmp(name, modal_dtype_name((modal_dtype)d)) == 0)
            return d;
    }
    return -1;
}

size_t modal__shape_count(modal_dtype dtype, size_t ndim, const size_t *shape)
{
    if (!dtype_valid(dtype) || ndim == 0 || ndim > MODAL_MAX_NDIM ||
        shape == NULL)
        return SIZE_MAX;
    /*
     * A zero extent makes the array empty however large the other extents
     * are, so it is checked first rather than tripping the overflow test.
     */
    for (size_t d = 0; d < ndim; d++) {
        if (shape[d] == 0)
            return 0;
    }
    size_t count = 1;
    for (size_t d = 0; d < ndim; d++) {
        if (count > SIZE_MAX / shape[d])
            return SIZE_MAX;
        count *= shape[d];
    }
    /* SIZE_MAX itself is the error value, so it cannot be a valid count. */
    if (count == SIZE_MAX || count > SIZE_MAX / modal_dtype_size(dtype))
        return SIZE_MAX;
    return count;
}

/* ---- constructors ------------------------------------------------ */

static modal_value *value_new(modal_type type)
{
    modal_value *v = modal__calloc(1, sizeof *v);
    if (v != NULL)
        v->type = type;
    return v;
}

modal_value *modal_null(void)
{
    return value_new(MODAL_TYPE_NULL);
}

modal_value *modal_bool(bool b)
{
    modal_value *v = value_new(MODAL_TYPE_BOOL);
    if (v != NULL)
        v->u.b = b != 0;
    return v;
}

modal_value *modal_int(int64_t i)
{
    modal_value *v = value_new(MODAL_TYPE_INT);
    if (v != NULL)
        v->u.i = i;
    return v;
}

modal_value *modal_float(double f)
{
    modal_value *v = value_new(MODAL_TYPE_FLOAT);
    if (v != NULL)
        v->u.f = f;
    return v;
}

modal_value *modal_string_n(const char *s, size_t len)
{
    if ((s == NULL && len > 0) || len == SIZE_MAX)
        return NULL;
    /* A string with an embedded NUL would be cut short by every C reader. */
    if (len > 0 && memchr(s, '\0', len) != NULL)
        return NULL;
    modal_value *v = value_new(MODAL_TYPE_STRING);
    if (v == NULL)
        return NULL;
    v->u.str.p = modal__strndup(len > 0 ? s : "", len);
    if (v->u.str.p == NULL) {
        free(v);
        return NULL;
    }
    v->u.str.len = len;
    return v;
}

modal_value *modal_string(const char *s)
{
    if (s == NULL)
        return NULL;
    return modal_string_n(s, strlen(s));
}

modal_value *modal_bytes(const void *p, size_t len)
{
    if (p == NULL && len > 0)
        return NULL;
    modal_value *v = value_new(MODAL_TYPE_BYTES);
    if (v == NULL)
        return NULL;
    /* modal__malloc(0) still returns a block, so p is never NULL. */
    v->u.bytes.p = modal__malloc(len);
    if (v->u.bytes.p == NULL) {
        free(v);
        return NULL;
    }
    if (len > 0)
        memcpy(v->u.bytes.p, p, len);
    v->u.bytes.len = len;
    return v;
}

/*
 * An array node with its shape filled in and no data yet; *bytes receives
 * the payload size. NULL when the shape is invalid or memory runs out.
 */
static modal_value *array_node(modal_dtype dtype, size_t ndim,
                               const size_t *shape, size_t *bytes)
{
    size_t count = modal__shape_count(dtype, ndim, shape);
    if (count == SIZE_MAX)
        return NULL;
    modal_value *v = value_new(MODAL_TYPE_ARRAY);
    if (v == NULL)
        return NULL;
    v->u.arr.dtype = dtype;
    v->u.arr.count = count;
    v->u.arr.ndim = ndim;
    memcpy(v->u.arr.shape, shape, ndim * sizeof shape[0]);
    *bytes = count * modal_dtype_size(dtype);
    return v;
}

modal_value *modal_array_new(modal_dtype dtype, size_t ndim,
                             const size_t *shape)
{
    size_t bytes;
    modal_value *v = array_node(dtype, ndim, shape, &bytes);
    if (v == NULL)
        return NULL;
    if (bytes >= MODAL__BIG_ALLOC) {
        /* Large arrays live in a prefaulted mapping (see modal__buf_new);
         * in a worker, in a memfd that can leave as the result frame
         * without a copy (lib/memfd_array.c). */
        modal__buf *b = modal__arrays_in_memfd ? modal__buf_new_memfd(bytes) : NULL;
        if (b == NULL)
            b = modal__buf_new(bytes);
        if (b == NULL) {
            free(v);
            return NULL;
        }
        v->u.arr.data = b->base;
        v->u.arr.backing = b;
        return v;
    }
    v->u.arr.data = modal__malloc(bytes);
    if (v->u.arr.data == NULL) {
        free(v);
        return NULL;
    }
    return v;
}

modal_value *modal_array_nd(modal_dtype dtype, const void *data, size_t ndim,
                            const size_t *shape)
{
    size_t count = modal__shape_count(dtype, ndim, shape);
    if (count == SIZE_MAX || (count > 0 && data == NULL))
        return NULL;
    modal_value *v = modal_array_new(dtype, ndim, shape);
    if (v != NULL && count > 0)
        memcpy(v->u.arr.data, data, count * modal_dtype_size(dtype));
    return v;
}

modal_value *modal_array(modal_dtype dtype, const void *data, size_t count)
{
    size_t shape[1] = {count};
    return modal_array_nd(dtype, data, 1, shape);
}

/*
 * True when [p, p+len) lies inside backing, so a decoder bug cannot make a
 * value point outside the memory it keeps alive.
 */
static int within(const modal__buf *backing, const void *p, size_t len)
{
    uintptr_t base = (uintptr_t)backing->base;
    uintptr_t at = (uintptr_t)p;
    return at >= base && at - base <= backing->len &&
           len <= backing->len - (at - base);
}

modal_value *modal__bytes_borrow(modal__buf *backing, const void *p,
                                 size_t len)
{
    if (backing == NULL)
        return NULL;
    if (p == NULL) {
        if (len > 0)
            return NULL;
        p = empty_payload;
    } else if (!within(backing, p, len)) {
        return NULL;
    }
    modal_value *v = value_new(MODAL_TYPE_BYTES);
    if (v == NULL)
        return NULL;
    /* The cast drops const only to share the field with owned bytes. */
    v->u.bytes.p = (uint8_t *)p;
    v->u.bytes.len = len;
    v->u.bytes.backing = modal__buf_ref(backing);
    return v;
}

modal_value *modal__array_borrow(modal__buf *backing, modal_dtype dtype,
                                 const void *data, size_t ndim,
                                 const size_t *shape)
{
    if (backing == NULL)
        return NULL;
    size_t bytes;
    modal_value *v = array_node(dtype, ndim, shape, &bytes);
    if (v == NULL)
        return NULL;
    if (data == NULL) {
        if (bytes > 0) {
            free(v);
            return NULL;
        }
        data = empty_payload;
    } else if (!within(backing, data, bytes)) {
        free(v);
        return NULL;
    }
    v->u.arr.data = (void *)data;
    v->u.arr.backing = modal__buf_ref(backing);
    return v;
}

modal_value *modal_list(void)
{
    return value_new(MODAL_TYPE_LIST);
}

modal_value *modal_map(void)
{
    return value_new(MODAL_TYPE_MAP);
}

/* Free the first n of items (some may be NULL). */
static void free_items(modal_value *const *items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        modal_value_free(items[i]);
}

modal_value *modal_list_of(modal_value *const *items, size_t n)
{
    if (n == 0)
        return modal_list();
    if (items == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (items[i] == NULL) {
            free_items(items, n);
            return NULL;
        }
    }
    modal_value *list = value_new(MODAL_TYPE_LIST);
    modal_value **slots = NULL;
    if (list != NULL && n <= SIZE_MAX / sizeof *slots)
        slots = modal__malloc(n * sizeof *slots);
    if (slots == NULL) {
        free(slots);
        free(list);
        free_items(items, n);
        return NULL;
    }
    memcpy(slots, items, n * sizeof *slots);
    list->u.list.items = slots;
    list->u.list.len = n;
    list->u.list.cap = n;
    return list;
}

/*
 * The capacity after cap when one more slot is needed: doubling keeps
 * appends amortised O(1). 0 when the new size would overflow.
 */
static size_t grow_cap(size_t cap, size_t elem)
{
    size_t next = cap == 0 ? 4 : cap * 2;
    if (next < cap || next > SIZE_MAX / elem)
        return 0;
    return next;
}

modal_status modal_list_append(modal_value *list, modal_value *item,
                               modal_error *err)
{
    if (item == NULL)
        return modal__fail(err, MODAL_EINVAL,
                           "modal_list_append: the item is NULL (a "
                           "constructor probably ran out of memory or got a "
                           "bad argument); check it before appending");
    /*
     * Freeing item here would free the list the caller still holds, so
     * this one failure leaves it untouched.
     */
    if (item == list)
        return modal__fail(err, MODAL_EINVAL,
                           "modal_list_append: the item is the list itself; "
                           "append a copy (modal_value_copy) instead");
    if (list == NULL || list->type != MODAL_TYPE_LIST) {
        modal_type found = modal_value_type(list);
        modal_value_free(item);
        return modal__fail(err, MODAL_ETYPE,
                           "modal_list_append: expected a list, got %s%s; "
                           "the item was freed",
                           type_phrase(found),
                           list == NULL ? " (a NULL pointer)" : "");
    }
    if (list->u.list.len == list->u.list.cap) {
        size_t cap = grow_cap(list->u.list.cap, sizeof(modal_value *));
        modal_value **items =
            cap > 0 ? modal__realloc(list->u.list.items, cap * sizeof *items)
                    : NULL;
        if (items == NULL) {
            modal_value_free(item);
            return modal__fail(err, MODAL_ENOMEM,
                               "modal_list_append: out of memory growing a "
                               "list of %zu items; the item was freed",
                               list->u.list.len);
        }
        list->u.list.items = items;
        list->u.list.cap = cap;
    }
    list->u.list.items[list->u.list.len++] = item;
    modal__ok(err);
    return MODAL_OK;
}

/* Index of key in map, or SIZE_MAX. Linear: maps of arguments are small. */
static size_t map_find(const modal_value *map, const char *key)
{
    for (size_t i = 0; i < map->u.map.len; i++) {
        if (strcmp(map->u.map.keys[i], key) == 0)
            return i;
    }
    return SIZE_MAX;
}

/*
 * Make room for one more map entry. The two arrays grow one after the
 * other; if the second fails the first is merely larger than cap says,
 * which the next attempt's realloc handles, so nothing is lost.
 */
static int map_reserve(modal_value *map)
{
    if (map->u.map.len < map->u.map.cap)
        return 0;
    size_t cap = grow_cap(map->u.map.cap, sizeof(char *));
    if (cap == 0)
        return -1;
    char **keys = modal__realloc(map->u.map.keys, cap * sizeof *keys);
    if (keys == NULL)
        return -1;
    map->u.map.keys = keys;
    modal_value **vals = modal__realloc(map->u.map.vals, cap * sizeof *vals);
    if (vals == NULL)
        return -1;
    map->u.map.vals = vals;
    map->u.map.cap = cap;
    return 0;
}

modal_status modal_map_set(modal_value *map, const char *key,
                           modal_value *value, modal_error *err)
{
    if (value == NULL)
        return modal__fail(err, MODAL_EINVAL,
                           "modal_map_set: the value for key \"%s\" is NULL "
                           "(a constructor probably ran out of memory or got "
                           "a bad argument); check it before setting",
                           key != NULL ? key : "(null)");
    /* As in modal_list_append: freeing value would free the caller's map. */
    if (value == map)
        return modal__fail(err, MODAL_EINVAL,
                           "modal_map_set: the value for key \"%s\" is the "
                           "map itself; set a copy (modal_value_copy) instead",
                           key != NULL ? key : "(null)");
    if (map == NULL || map->type != MODAL_TYPE_MAP) {
        modal_type found = modal_value_type(map);
        modal_value_free(value);
        return modal__fail(err, MODAL_ETYPE,
                           "modal_map_set: expected a map, got %s%s; the "
                           "value was freed",
                           type_phrase(found),
                           map == NULL ? " (a NULL pointer)" : "");
    }
    if (key == NULL) {
        modal_value_free(value);
        return modal__fail(err, MODAL_EINVAL,
                           "modal_map_set: the key is NULL; pass a "
                           "NUL-terminated string (the value was freed)");
    }
    size_t at = map_find(map, key);
    if (at != SIZE_MAX) {
        modal_value_free(map->u.map.vals[at]);
        map->u.map.vals[at] = value;
        modal__ok(err);
        return MODAL_OK;
    }
    char *copy = NULL;
    if (map_reserve(map) != 0 || (copy = modal__strdup(key)) == NULL) {
        modal_value_free(value);
        return modal__fail(err, MODAL_ENOMEM,
                           "modal_map_set: out of memory adding key \"%s\" "
                           "to a map of %zu entries; the value was freed",
                           key, map->u.map.len);
    }
    map->u.map.keys[map->u.map.len] = copy;
    map->u.map.vals[map->u.map.len] = value;
    map->u.map.len++;
    modal__ok(err);
    return MODAL_OK;
}

/* ---- copy, equality, free ---------------------------------------- */

modal_value *modal_value_copy(const modal_value *v)
{
    if (v == NULL)
        return NULL;
    switch (v->type) {
    case MODAL_TYPE_NULL:
        return modal_null();
    case MODAL_TYPE_BOOL:
        return modal_bool(v->u.b);
    case MODAL_TYPE_INT:
        return modal_int(v->u.i);
    case MODAL_TYPE_FLOAT:
        return modal_float(v->u.f);
    case MODAL_TYPE_STRING:
        return modal_string_n(v->u.str.p, v->u.str.len);
    case MODAL_TYPE_BYTES:
        /* A copy owns its bytes, so it outlives any borrowed buffer. */
        return modal_bytes(v->u.bytes.p, v->u.bytes.len);
    case MODAL_TYPE_ARRAY:
        return modal_array_nd(v->u.arr.dtype, v->u.arr.data, v->u.arr.ndim,
                              v->u.arr.shape);
    case MODAL_TYPE_LIST: {
        modal_value *list = modal_list();
        if (list == NULL)
            return NULL;
        size_t n = v->u.list.len;
        if (n > 0) {
            list->u.list.items = modal__malloc(n * sizeof(modal_value *));
            if (list->u.list.items == NULL) {
                free(list);
                return NULL;
            }
            list->u.list.cap = n;
        }
        for (size_t i = 0; i < n; i++) {
            modal_value *item = modal_value_copy(v->u.list.items[i]);
            if (item == NULL) {
                modal_value_free(list);
                return NULL;
            }
            list->u.list.items[list->u.list.len++] = item;
        }
        return list;
    }
    case MODAL_TYPE_MAP: {
        modal_value *map = modal_map();
        if (map == NULL)
            return NULL;
        size_t n = v->u.map.len;
        if (n > 0) {
            map->u.map.keys = modal__malloc(n * sizeof(char *));
            map->u.map.vals = modal__malloc(n * sizeof(modal_value *));
            if (map->u.map.keys == NULL || map->u.map.vals == NULL) {
                modal_value_free(map);
                return NULL;
            }
            map->u.map.cap = n;
        }
        for (size_t i = 0; i < n; i++) {
            char *key = modal__strdup(v->u.map.keys[i]);
            modal_value *val = key != NULL
                                   ? modal_value_copy(v->u.map.vals[i])
                                   : NULL;
            if (val == NULL) {
                free(key);
                modal_value_free(map);
                return NULL;
            }
            map->u.map.keys[map->u.map.len] = key;
            map->u.map.vals[map->u.map.len] = val;
            map->u.map.len++;
        }
        return map;
    }
    }
    return NULL;
}

int modal_value_equal(const modal_value *a, const modal_value *b)
{
    if (a == b)
        return 1;
    if (a == NULL || b == NULL || a->type != b->type)
        return 0;
    switch (a->type) {
    case MODAL_TYPE_NULL:
        return 1;
    case MODAL_TYPE_BOOL:
        return a->u.b == b->u.b;
    case MODAL_TYPE_INT:
        return a->u.i == b->u.i;
    case MODAL_TYPE_FLOAT:
        /* By bit pattern: NaN equals the same NaN; 0.0 differs from -0.0. */
        return memcmp(&a->u.f, &b->u.f, sizeof a->u.f) == 0;
    case MODAL_TYPE_STRING:
        return a->u.str.len == b->u.str.len &&
               memcmp(a->u.str.p, b->u.str.p, a->u.str.len) == 0;
    case MODAL_TYPE_BYTES:
        return a->u.bytes.len == b->u.bytes.len &&
               (a->u.bytes.len == 0 ||
                memcmp(a->u.bytes.p, b->u.bytes.p, a->u.bytes.len) == 0);
    case MODAL_TYPE_ARRAY: {
        if (a->u.arr.dtype != b->u.arr.dtype || a->u.arr.ndim != b->u.arr.ndim)
            return 0;
        if (memcmp(a->u.arr.shape, b->u.arr.shape,
                   a->u.arr.ndim * sizeof a->u.arr.shape[0]) != 0)
            return 0;
        size_t bytes = a->u.arr.count * modal_dtype_size(a->u.arr.dtype);
        return bytes == 0 || memcmp(a->u.arr.data, b->u.arr.data, bytes) == 0;
    }
    case MODAL_TYPE_LIST:
        if (a->u.list.len != b->u.list.len)
            return 0;
        for (size_t i = 0; i < a->u.list.len; i++) {
            if (!modal_value_equal(a->u.list.items[i], b->u.list.items[i]))
                return 0;
        }
        return 1;
    case MODAL_TYPE_MAP:
        if (a->u.map.len != b->u.map.len)
            return 0;
        for (size_t i = 0; i < a->u.map.len; i++) {
            if (strcmp(a->u.map.keys[i], b->u.map.keys[i]) != 0 ||
                !modal_value_equal(a->u.map.vals[i], b->u.map.vals[i]))
                return 0;
        }
        return 1;
    }
    return 0;
}

void modal_value_free(modal_value *v)
{
    if (v == NULL)
        return;
    switch (v->type) {
    case MODAL_TYPE_NULL:
    case MODAL_TYPE_BOOL:
    case MODAL_TYPE_INT:
    case MODAL_TYPE_FLOAT:
        break;
    case MODAL_TYPE_STRING:
        free(v->u.str.p);
        break;
    case MODAL_TYPE_BYTES:
        if (v->u.bytes.backing != NULL)
            modal__buf_unref(v->u.bytes.backing);
        else
            free(v->u.bytes.p);
        break;
    case MODAL_TYPE_ARRAY:
        if (v->u.arr.backing != NULL)
            modal__buf_unref(v->u.arr.backing);
        else
            free(v->u.arr.data);
        break;
    case MODAL_TYPE_LIST:
        free_items(v->u.list.items, v->u.list.len);
        free(v->u.list.items);
        break;
    case MODAL_TYPE_MAP:
        for (size_t i = 0; i < v->u.map.len; i++) {
            free(v->u.map.keys[i]);
            modal_value_free(v->u.map.vals[i]);
        }
        free(v->u.map.keys);
        free(v->u.map.vals);
        break;
    }
    free(v);
}

/* ---- accessors --------------------------------------------------- */

modal_type modal_value_type(const modal_value *v)
{
    return v != NULL ? v->type : MODAL_TYPE_NULL;
}

/*
 * The type-mismatch failure every accessor reports. A NULL pointer reads as
 * null, like modal_value_type() says, but the message says so because it
 * usually means a lookup found nothing.
 */
static modal_status type_fail(modal_error *err, const char *fn,
                              modal_type want, const modal_value *v)
{
    return modal__fail(err, MODAL_ETYPE, "%s: expected %s, got %s%s", fn,
                       type_phrase(want), type_phrase(modal_value_type(v)),
                       v == NULL ? " (a NULL pointer: was the key or index "
                                   "missing?)"
                                 : "");
}

modal_status modal_get_bool(const modal_value *v, bool *out, modal_error *err)
{
    if (v == NULL || v->type != MODAL_TYPE_BOOL)
        return type_fail(err, "modal_get_bool", MODAL_TYPE_BOOL, v);
    if (out != NULL)
        *out = v->u.b;
    modal__ok(err);
    return MODAL_OK;
}

modal_status modal_get_int(const modal_value *v, int64_t *out,
                           modal_error *err)
{
    if (v == NULL || v->type != MODAL_TYPE_INT)
        return type_fail(err, "modal_get_int", MODAL_TYPE_INT, v);
    if (out != NULL)
        *out = v->u.i;
    modal__ok(err);
    return MODAL_OK;
}

modal_status modal_get_float(const modal_value *v, double *out,
                             modal_error *err)
{
    double f;
    if (v != NULL && v->type == MODAL_TYPE_FLOAT)
        f = v->u.f;
    else if (v != NULL && v->type == MODAL_TYPE_INT)
        f = (double)v->u.i; /* rounds to nearest beyond 2^53 */
    else
        return type_fail(err, "modal_get_float", MODAL_TYPE_FLOAT, v);
    if (out != NULL)
        *out = f;
    modal__ok(err);
    return MODAL_OK;
}

modal_status modal_get_string(const modal_value *v, const char **out,
                              size_t *len, modal_error *err)
{
    if (v == NULL || v->type != MODAL_TYPE_STRING)
        return type_fail(err, "modal_get_string", MODAL_TYPE_STRING, v);
    if (out != NULL)
        *out = v->u.str.p;
    if (len != NULL)
        *len = v->u.str.len;
    modal__ok(err);
    return MODAL_OK;
}

modal_status modal_get_bytes(const modal_value *v, const void **out,
                             size_t *len, modal_error *err)
{
    if (v == NULL || v->type != MODAL_TYPE_BYTES)
        return type_fail(err, "modal_get_bytes", MODAL_TYPE_BYTES, v);
    if (out != NULL)
        *out = v->u.bytes.p;
    if (len != NULL)
        *len = v->u.bytes.len;
    modal__ok(err);
    return MODAL_OK;
}

modal_status modal_get_array(const modal_value *v, modal_dtype dtype,
                             const void **out, size_t *count,
                             modal_error *err)
{
    if (!dtype_valid(dtype))
        return modal__fail(err, MODAL_EINVAL,
                           "modal_get_array: dtype %d is not a modal_dtype; "
                           "pass one of MODAL_U8 .. MODAL_F64",
                           (int)dtype);
    if (v == NULL || v->type != MODAL_TYPE_ARRAY)
        return modal__fail(err, MODAL_ETYPE,
                           "modal_get_array: expected %s %s array, got %s%s",
                           dtype_article(dtype), modal_dtype_name(dtype),
                           type_phrase(modal_value_type(v)),
                           v == NULL ? " (a NULL pointer: was the key or "
                                       "index missing?)"
                                     : "");
    if (v->u.arr.dtype != dtype)
        return modal__fail(err, MODAL_ETYPE,
                           "modal_get_array: expected %s %s array, got %s %s "
                           "array",
                           dtype_article(dtype), modal_dtype_name(dtype),
                           dtype_article(v->u.arr.dtype),
                           modal_dtype_name(v->u.arr.dtype));
    if (out != NULL)
        *out = v->u.arr.data;
    if (count != NULL)
        *count = v->u.arr.count;
    modal__ok(err);
    return MODAL_OK;
}

void *modal_array_data_mut(modal_value *v)
{
    if (v == NULL || v->type != MODAL_TYPE_ARRAY)
        return NULL;
    return v->u.arr.data;
}

modal_status modal_array_dtype(const modal_value *v, modal_dtype *out,
                               modal_error *err)
{
    if (v == NULL || v->type != MODAL_TYPE_ARRAY)
        return type_fail(err, "modal_array_dtype", MODAL_TYPE_ARRAY, v);
    if (out != NULL)
        *out = v->u.arr.dtype;
    modal__ok(err);
    return MODAL_OK;
}

size_t modal_array_shape(const modal_value *v, size_t shape[MODAL_MAX_NDIM])
{
    if (v == NULL || v->type != MODAL_TYPE_ARRAY)
        return 0;
    if (shape != NULL) {
        size_t n = v->u.arr.ndim < MODAL_MAX_NDIM ? v->u.arr.ndim
                                                  : MODAL_MAX_NDIM;
        memcpy(shape, v->u.arr.shape, n * sizeof shape[0]);
    }
    return v->u.arr.ndim;
}

size_t modal_value_len(const modal_value *v)
{
    if (v == NULL)
        return 0;
    if (v->type == MODAL_TYPE_LIST)
        return v->u.list.len;
    if (v->type == MODAL_TYPE_MAP)
        return v->u.map.len;
    return 0;
}

const modal_value *modal_list_get(const modal_value *v, size_t i)
{
    if (v == NULL || v->type != MODAL_TYPE_LIST || i >= v->u.list.len)
        return NULL;
    return v->u.list.items[i];
}

const modal_value *modal_map_get(const modal_value *v, const char *key)
{
    if (v == NULL || v->type != MODAL_TYPE_MAP || key == NULL)
        return NULL;
    size_t at = map_find(v, key);
    return at != SIZE_MAX ? v->u.map.vals[at] : NULL;
}

modal_status modal_map_entry(const modal_value *v, size_t i, const char **key,
                             const modal_value **value, modal_error *err)
{
    if (v == NULL || v->type != MODAL_TYPE_MAP)
        return type_fail(err, "modal_map_entry", MODAL_TYPE_MAP, v);
    if (i >= v->u.map.len)
        return modal__fail(err, MODAL_ERANGE,
                           "modal_map_entry: index %zu is past the end of a "
                           "map of %zu entries; iterate below modal_value_len",
                           i, v->u.map.len);
    if (key != NULL)
        *key = v->u.map.keys[i];
    if (value != NULL)
        *value = v->u.map.vals[i];
    modal__ok(err);
    return MODAL_OK;
}
