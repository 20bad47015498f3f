// Whether this build is instrumented by AddressSanitizer or UndefinedBehaviorSanitizer. Such
// builds cannot run under the seccomp filter (the sanitizer runtimes make system calls the
// policy forbids), so tests of the filter skip themselves and jailed daemons run without it.
#ifndef VFIOD_DAEMON_BASE_SANITIZERS_H_
#define VFIOD_DAEMON_BASE_SANITIZERS_H_

namespace vfiod {

#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitizerBuild = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(undefined_behavior_sanitizer)
inline constexpr bool kSanitizerBuild = true;
#else
inline constexpr bool kSanitizerBuild = false;
#endif
#else
inline constexpr bool kSanitizerBuild = false;
#endif

}  // namespace vfiod

#endif  // VFIOD_DAEMON_BASE_SANITIZERS_H_
