/*
 * artifacts.c: the executable store. Files are named by their SHA-256 and
 * written atomically by the upload handler, so a name always means those
 * exact bytes.
 */
#include "rt.h"

#include <elf.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int rt_valid_sha(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
            return 0;
    return n == 64;
}

int rt_artifact_path(const char *sha, char *out, size_t outsz)
{
    return snprintf(out, outsz, "%s/artifacts/%s", rt.state_dir, sha) < (int)outsz ? 0 : -1;
}

bool rt_artifact_exists(const char *sha)
{
    char path[600];
    struct stat sb;
    return rt_valid_sha(sha) && rt_artifact_path(sha, path, sizeof path) == 0 &&
           stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static const char *machine_name(unsigned m)
{
    switch (m) {
    case EM_X86_64: return "x86-64";
    case EM_AARCH64: return "aarch64";
    case EM_386: return "i386";
    case EM_ARM: return "arm";
    case EM_RISCV: return "riscv";
    case EM_PPC64: return "ppc64";
    default: return "an unknown machine";
    }
}

bool rt_artifact_runnable(const char *sha, char *why, size_t whysz)
{
    char path[600];
    rt_artifact_path(sha, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, whysz, "it cannot be opened on the runtime");
        return false;
    }
    Elf64_Ehdr eh;
    ssize_t n = read(fd, &eh, sizeof eh);
    close(fd);
    if (n < (ssize_t)EI_NIDENT || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) {
        snprintf(why, whysz, "it is not an ELF executable");
        return false;
    }
#if defined(__x86_64__)
    const unsigned host = EM_X86_64;
#elif defined(__aarch64__)
    const unsigned host = EM_AARCH64;
#else
    const unsigned host = 0;
#endif
    if (n < (ssize_t)sizeof eh || eh.e_ident[EI_CLASS] != ELFCLASS64) {
        snprintf(why, whysz, "it is a 32-bit ELF file; this runtime runs 64-bit executables");
        return false;
    }
    if (host != 0 && eh.e_machine != host) {
        snprintf(why, whysz, "it is built for %s, but this runtime runs on %s",
                 machine_name(eh.e_machine), machine_name(host));
        return false;
    }
    if (eh.e_type != ET_EXEC && eh.e_type != ET_DYN) {
        snprintf(why, whysz, "it is an ELF object or core file, not an executable");
        return false;
    }
    return true;
}
