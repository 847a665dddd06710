# Install rules (cmake --install BUILD --prefix P, or make install PREFIX=P).
#
# Every executable defined under src/, tools/ and bench/ goes to P/bin: ds4, ds4-server,
# ds4-model-info, ds4-make-model, ds4-convert, ds4-golden-check, ds4-bench-* (when
# DS4_BENCH is on), and whatever tool a later component adds, without a list here to
# keep in sync. Tests and fuzz targets stay in the build tree. The libraries are
# static and linked into the binaries, so nothing else is needed at run time.
include(GNUInstallDirs)

# The executable targets of DIR and of every directory below it.
function(ds4_collect_executables dir out)
    set(found)
    get_property(targets DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
    foreach(target ${targets})
        get_target_property(type ${target} TYPE)
        if(type STREQUAL "EXECUTABLE")
            list(APPEND found ${target})
        endif()
    endforeach()
    get_property(subdirs DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
    foreach(sub ${subdirs})
        ds4_collect_executables(${sub} sub_found)
        list(APPEND found ${sub_found})
    endforeach()
    set(${out} ${found} PARENT_SCOPE)
endfunction()

set(ds4_install_targets)
get_property(ds4_top_subdirs DIRECTORY ${DS4_SOURCE_DIR} PROPERTY SUBDIRECTORIES)
foreach(dir ${ds4_top_subdirs})
    if(dir MATCHES "^${DS4_SOURCE_DIR}/(src|tools|bench)/")
        ds4_collect_executables(${dir} dir_targets)
        list(APPEND ds4_install_targets ${dir_targets})
    endif()
endforeach()

if(ds4_install_targets)
    install(TARGETS ${ds4_install_targets} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
install(FILES ${DS4_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
