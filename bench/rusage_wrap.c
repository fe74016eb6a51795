/* Runs a command with the caller's stdin, stdout and environment and appends the CPU
 * seconds it and every process it waited for used (user + system, from wait4) to a log
 * file. The C twin of rusage_wrap.py, for use as the CGI program in front of git
 * http-backend: it adds one fork and exec to a request, not an interpreter's start-up.
 *
 *     rusage_wrap LOG COMMAND [ARGS...]
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) {
        execv(argv[2], argv + 2);
        _exit(127);
    }
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) return 1;
    char line[64];
    int n = snprintf(line, sizeof line, "%.4f\n",
                     ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
                         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd >= 0) {
        (void)!write(fd, line, n);
        close(fd);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
