/*
 * semihost.h - ARM semihosting (the "Semihosting for AArch32 and AArch64"
 * specification, v2): a BKPT 0xAB asks the debugger, here QEMU started with
 * -semihosting-config enable=on,target=native, to do file I/O on the host.
 * Only the emulation harness uses it: on a real board without a debugger
 * attached a BKPT is a HardFault.
 */
#ifndef HYDRA_SEMIHOST_H
#define HYDRA_SEMIHOST_H

#include <stdint.h>
#include <string.h>

enum {
    SYS_OPEN = 0x01,
    SYS_CLOSE = 0x02,
    SYS_WRITE = 0x05,
    SYS_READ = 0x06,
    SYS_FLEN = 0x0C,
    SYS_GET_CMDLINE = 0x15,
    SYS_EXIT = 0x18,
    SYS_EXIT_EXTENDED = 0x20
};

enum { SH_MODE_RB = 1, SH_MODE_WB = 5, SH_MODE_A = 8 }; /* fopen modes "rb", "wb", "a" */
#define SH_ADP_STOPPED_APPLICATION_EXIT 0x20026u

static inline int32_t sh_call(int32_t op, const void *args)
{
    register int32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = args;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

/* Returns a handle, or -1. ":tt" opened with SH_MODE_A is the host's stderr. */
static inline int32_t sh_open(const char *name, uint32_t mode)
{
    uint32_t args[3] = {(uint32_t)(uintptr_t)name, mode, (uint32_t)strlen(name)};
    return sh_call(SYS_OPEN, args);
}

static inline int32_t sh_close(int32_t handle)
{
    uint32_t args[1] = {(uint32_t)handle};
    return sh_call(SYS_CLOSE, args);
}

/* Both return the number of bytes NOT transferred (0 = all of them). */
static inline int32_t sh_write(int32_t handle, const void *buf, uint32_t len)
{
    uint32_t args[3] = {(uint32_t)handle, (uint32_t)(uintptr_t)buf, len};
    return sh_call(SYS_WRITE, args);
}

static inline int32_t sh_read(int32_t handle, void *buf, uint32_t len)
{
    uint32_t args[3] = {(uint32_t)handle, (uint32_t)(uintptr_t)buf, len};
    return sh_call(SYS_READ, args);
}

/* File length in bytes, or -1. */
static inline int32_t sh_flen(int32_t handle)
{
    uint32_t args[1] = {(uint32_t)handle};
    return sh_call(SYS_FLEN, args);
}

/* The command line (-semihosting-config ...,arg=A,arg=B gives "A B"); returns 0 on success. */
static inline int32_t sh_get_cmdline(char *buf, uint32_t size)
{
    uint32_t args[2] = {(uint32_t)(uintptr_t)buf, size};
    return sh_call(SYS_GET_CMDLINE, args);
}

/* Ends the emulation; QEMU exits with `code` (0-255). */
static inline void sh_exit(int code) __attribute__((noreturn));
static inline void sh_exit(int code)
{
    uint32_t args[2] = {SH_ADP_STOPPED_APPLICATION_EXIT, (uint32_t)code};
    sh_call(SYS_EXIT_EXTENDED, args);
    for (;;) { /* not reached under QEMU */
    }
}

#endif /* HYDRA_SEMIHOST_H */
