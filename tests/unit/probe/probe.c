/* A shared library that only LibrariesTest loads (runtime::openLibrary's
   search order), so that no other part of the test process has it. */
int dattn_probe_answer(void) { return 42; }
