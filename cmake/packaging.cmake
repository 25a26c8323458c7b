# Install rules and the Debian package (cpack -G DEB in the build folder):
# carebroker_<version>_amd64.deb with the binaries, the systemd units, an
# example config under /etc/carebroker/ (conffiles: an upgrade keeps the
# operator's edits) and a `carebroker` system user made by postinst.
include(GNUInstallDirs)

install(TARGETS carebroker carebrokerctl carebroker-audit carebroker-connect RUNTIME DESTINATION bin)
install(FILES deploy/systemd/carebroker.service deploy/systemd/carebroker-connect.service
        DESTINATION /lib/systemd/system)
install(FILES deploy/config/carebroker.yaml deploy/config/connect.yaml DESTINATION /etc/carebroker)
install(DIRECTORY deploy/agreements/ DESTINATION /etc/carebroker/agreements FILES_MATCHING PATTERN "*.yaml")
install(PROGRAMS deploy/pki/dev-pki.sh DESTINATION share/carebroker)
install(FILES deploy/prometheus/alerts.yml deploy/grafana/carebroker.json README.md SECURITY.md
        DESTINATION share/doc/carebroker)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME carebroker)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_PACKAGE_CONTACT "carebroker maintainers <carebroker@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "consent-aware care-data broker for councils and the NHS (gRPC, mutual TLS)")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # carebroker_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)  # Depends from the linked libraries (dpkg-shlibdeps)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser, openssl")
# carebroker-audit prints documents to PDF with headless Chromium and draws
# the data-flow map with Graphviz; neither is needed to run the broker.
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "chromium, graphviz")
# Every file under /etc/carebroker is a conffile.
file(GLOB cb_agreements RELATIVE ${PROJECT_SOURCE_DIR}/deploy/agreements ${PROJECT_SOURCE_DIR}/deploy/agreements/*.yaml)
set(cb_conffiles "/etc/carebroker/carebroker.yaml\n/etc/carebroker/connect.yaml\n")
foreach(f ${cb_agreements})
  string(APPEND cb_conffiles "/etc/carebroker/agreements/${f}\n")
endforeach()
file(WRITE ${PROJECT_BINARY_DIR}/debian/conffiles "${cb_conffiles}")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_BINARY_DIR}/debian/conffiles ${PROJECT_SOURCE_DIR}/deploy/debian/postinst
    ${PROJECT_SOURCE_DIR}/deploy/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
