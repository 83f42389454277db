/*
 * main.c - host harness for a hydra-edge model.
 *
 *     ./model in.bin out.bin
 *
 * in.bin holds N int8 inputs of HYDRA_MODEL_INPUT_BYTES each, concatenated;
 * the model runs on each in turn and out.bin receives the N outputs of
 * HYDRA_MODEL_OUTPUT_BYTES each. Exit codes: 0 ok, 2 usage, 3 I/O error,
 * 4 input size not a multiple of the model's input, 10 + status when a
 * kernel returns an error status.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

enum { EXIT_USAGE = 2, EXIT_IO = 3, EXIT_BAD_SIZE = 4, EXIT_KERNEL = 10 };

/* Reads the whole file into a malloc'd buffer; returns 0 or an errno value. */
static int read_file(const char *path, unsigned char **data, size_t *size)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    size_t cap = 0, len = 0;
    int err = 0;
    if (f == NULL) {
        return errno ? errno : EIO;
    }
    for (;;) {
        size_t got;
        if (len == cap) {
            size_t new_cap = cap ? 2 * cap : 65536;
            unsigned char *p = (unsigned char *)realloc(buf, new_cap);
            if (p == NULL) {
                err = ENOMEM;
                break;
            }
            buf = p;
            cap = new_cap;
        }
        got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f)) {
                err = errno ? errno : EIO;
            }
            break;
        }
    }
    fclose(f);
    if (err) {
        free(buf);
        return err;
    }
    *data = buf;
    *size = len;
    return 0;
}

int main(int argc, char **argv)
{
    const char *prog = argc > 0 ? argv[0] : "model";
    unsigned char *in = NULL;
    int8_t *out = NULL;
    size_t in_size = 0, n, i, written;
    FILE *f;
    int err;

    if (argc != 3) {
        fprintf(stderr, "usage: %s in.bin out.bin\n"
                        "  in.bin: N int8 inputs of %d bytes each, concatenated\n"
                        "  out.bin: the N int8 outputs of %d bytes each\n",
                prog, HYDRA_MODEL_INPUT_BYTES, HYDRA_MODEL_OUTPUT_BYTES);
        return EXIT_USAGE;
    }
    err = read_file(argv[1], &in, &in_size);
    if (err) {
        fprintf(stderr, "%s: cannot read input file '%s': %s\n", prog, argv[1], strerror(err));
        return EXIT_IO;
    }
    if (in_size % HYDRA_MODEL_INPUT_BYTES != 0) {
        fprintf(stderr, "%s: input file '%s' has %lu bytes, not a multiple of the model's input size (%d bytes)\n",
                prog, argv[1], (unsigned long)in_size, HYDRA_MODEL_INPUT_BYTES);
        free(in);
        return EXIT_BAD_SIZE;
    }
    n = in_size / HYDRA_MODEL_INPUT_BYTES;
    out = (int8_t *)malloc(n ? n * HYDRA_MODEL_OUTPUT_BYTES : 1);
    if (out == NULL) {
        fprintf(stderr, "%s: out of memory for %lu outputs\n", prog, (unsigned long)n);
        free(in);
        return EXIT_IO;
    }
    for (i = 0; i < n; i++) {
        int status = hydra_model_run((const int8_t *)(in + i * HYDRA_MODEL_INPUT_BYTES),
                                     out + i * HYDRA_MODEL_OUTPUT_BYTES);
        if (status != 0) {
            fprintf(stderr, "%s: the model failed on input %lu with kernel status %d\n", prog, (unsigned long)i,
                    status);
            free(in);
            free(out);
            return EXIT_KERNEL + status;
        }
    }
    free(in);
    f = fopen(argv[2], "wb");
    if (f == NULL) {
        fprintf(stderr, "%s: cannot open output file '%s': %s\n", prog, argv[2], strerror(errno));
        free(out);
        return EXIT_IO;
    }
    written = fwrite(out, 1, n * HYDRA_MODEL_OUTPUT_BYTES, f);
    err = written != n * HYDRA_MODEL_OUTPUT_BYTES ? (errno ? errno : EIO) : 0;
    if (fclose(f) != 0 && !err) {
        err = errno ? errno : EIO;
    }
    if (err) {
        fprintf(stderr, "%s: cannot write output file '%s': %s\n", prog, argv[2], strerror(err));
        free(out);
        return EXIT_IO;
    }
    free(out);
    return 0;
}
