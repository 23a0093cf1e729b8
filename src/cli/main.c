/* main.c - the bitraft command (for now: the engine demo). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitraft/engine.h"

int main(int argc, char **argv) {
    (void)argc, (void)argv;
    return 0;
}
