/* The file driver's mode string ("r", "w+", "wx", "a+b", "w atomic"...),
 * parsed by parse_mode both for ascope_use_file and, with an explicit
 * length, out of the options the core hands back at acquire.
 *
 * parse_mode is static, so the driver's source is compiled into this
 * target. The mode is handed over without a terminating NUL: the length is
 * all the parser may go by.
 *
 * Input: the mode. */
#include "../../drivers/file/file_driver.c"

#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *mode = fz_xmalloc(size);
  if (size) memcpy(mode, data, size);
  unsigned fm = 0xdead;
  int fl = -1;
  const char *why = NULL;
  if (parse_mode(mode, size, &fm, &fl, &why) == 0) {
    size_t i = 0;
    while (i < size && mode[i] == ' ') i++;
    FZ_CHECK(i < size && strchr("rwax", mode[i]) != NULL);
    FZ_CHECK(why == NULL && (fm & (FM_READ | FM_WRITE)));
    FZ_CHECK(fl & O_CLOEXEC);
    int acc = fl & O_ACCMODE;
    if ((fm & FM_READ) && (fm & FM_WRITE))
      FZ_CHECK(acc == O_RDWR);
    else
      FZ_CHECK(acc == (fm & FM_READ ? O_RDONLY : O_WRONLY));
    FZ_CHECK(!(fm & FM_EXCL) == !(fl & O_EXCL));
    FZ_CHECK(!((fl & O_EXCL) && (fl & O_TRUNC))); /* "wx" creates, never truncates */
    FZ_CHECK(!(fm & FM_APPEND) == !(fl & O_APPEND));
    /* atomic replaces the whole file: never with reading only or appending */
    if (fm & FM_ATOMIC) FZ_CHECK((fm & FM_WRITE) && !(fm & FM_APPEND) && mode[i] != 'r');
    if (fm & FM_WRITE && !(fm & FM_APPEND) && !(fm & FM_EXCL) && mode[i] != 'r')
      FZ_CHECK(fl & O_TRUNC);
  } else {
    FZ_CHECK(fm == 0xdead && fl == -1);    /* a failure leaves the results alone */
    FZ_CHECK(why != NULL && *why != '\0'); /* and says why, for the acquire's message */
  }
  free(mode);
  return 0;
}
