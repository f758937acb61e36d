/*
 * replay_main.c - the main() of a fuzz target built without libFuzzer
 * (make fuzz-replay): runs LLVMFuzzerTestOneInput once on each file named on
 * the command line, in order. A failure aborts inside the target, as under
 * libFuzzer; reaching the end means every input passed.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
    static uint8_t buf[1 << 20]; /* an input is read up to 1 MiB */
    const char *name = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            perror(argv[i]);
            return 2;
        }
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, n);
    }
    printf("%s: %d inputs replayed, no failure\n", name, argc - 1);
    return 0;
}
