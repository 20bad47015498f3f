// Whether this build is instrumented by AddressSanitizer or UndefinedBehaviorSanitizer. Such
// builds cannot run under the seccomp filter (the sanitizer runtimes make system calls the
// policy forbids), so tests of the filter skip themselves and jailed daemons run without it.
//
// VFIOD_ADDRESS_SANITIZER is defined (to 1) in AddressSanitizer builds, for code that must exist
// only there (sanitizer runtime hooks); kSanitizerBuild is for everything else.
#ifndef VFIOD_DAEMON_BASE_SANITIZERS_H_
#define VFIOD_DAEMON_BASE_SANITIZERS_H_

#if defined(__SANITIZE_ADDRESS__)
#define VFIOD_ADDRESS_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define VFIOD_ADDRESS_SANITIZER 1
#endif
#endif

namespace vfiod {

#if defined(VFIOD_ADDRESS_SANITIZER)
inline constexpr bool kSanitizerBuild = true;
#elif defined(__has_feature)
#if __has_feature(undefined_behavior_sanitizer)
inline constexpr bool kSanitizerBuild = true;
#else
inline constexpr bool kSanitizerBuild = false;
#endif
#else
inline constexpr bool kSanitizerBuild = false;
#endif

}  // namespace vfiod

#endif  // VFIOD_DAEMON_BASE_SANITIZERS_H_
