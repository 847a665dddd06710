#include "gguf/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "ds4/error.h"

namespace ds4 {
namespace {

// Closes the descriptor on every path out of the constructor; the mapping keeps the
// file alive on its own, so the fd is not needed after mmap.
struct FdGuard {
    int fd;
    ~FdGuard() {
        if (fd >= 0) ::close(fd);
    }
};

[[noreturn]] void fail_errno(const std::string& path, const char* what, int err) {
    fail(path, ": ", what, ": ", std::strerror(err));
}

}  // namespace

MappedFile::MappedFile(const std::string& path) : path_(path) {
    int fd;
    do {
        fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) fail_errno(path, "cannot open", errno);
    const FdGuard guard{fd};

    struct stat st {};
    if (::fstat(fd, &st) != 0) fail_errno(path, "cannot stat", errno);
    if (!S_ISREG(st.st_mode)) fail(path, ": not a regular file");
    size_ = static_cast<uint64_t>(st.st_size);
    // mmap of length 0 is EINVAL: an empty file is represented by an empty span and
    // rejected (with a clear message) by whichever format parser looks at it.
    if (size_ == 0) return;

    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) fail_errno(path, "cannot mmap", errno);
    data_ = static_cast<const uint8_t*>(p);
}

MappedFile::~MappedFile() {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace ds4
