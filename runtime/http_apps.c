/*
 * http_apps.c: the apps resource. GET /v1/apps/<app>/logs answers the
 * app's log file (every output line of its calls, as runtime.md says).
 */
#include "http_routes.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

void rt_http_app_logs(rt_hctx *h)
{
    rt_hreq *r = h->r;
    const char *app = h->id;
    /* The name becomes a file name: the protocol's rule keeps it inside
     * logs/ ("." and ".." are refused). */
    const char *bad = modal__app_name_problem(app);
    if (bad != NULL) {
        rt_hreq_error(r, 400, MODAL_EINVAL, "\"%.160s\" is not an app name: it %s", app, bad);
        return;
    }
    char path[1024]; /* state_dir, "/logs/", a name of at most 127 bytes, ".log" */
    snprintf(path, sizeof path, "%s/logs/%s.log", rt.state_dir, app);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        if (fd >= 0)
            close(fd);
        rt_hreq_error(r, 404, MODAL_ENOTFOUND, "no logs for app %s", app);
        return;
    }
    rt_hreq_send_fd(r, 200, MODAL__CT_TEXT, NULL, fd, (size_t)sb.st_size);
}
