# Run the Vagrantfile's Ansible provisioner as `vagrant up` would on the last VM, with
# Vagrant's own provisioner code building the ansible-playbook command and environment.
#
#   ruby tests/vagrant/run_ansible_provisioner.rb VAGRANTFILE_DIR LOCAL_DATA_DIR PLAYBOOK
#
# Only the playbook is swapped (for one that prints what each host would connect with)
# and the machine is a stand-in: without a hypervisor there is no VM, so ssh_info is
# what the VirtualBox provider reports for a forwarded SSH port (Vagrant docs,
# "Ansible Provisioner": the generated or static inventory, --user, ANSIBLE_SSH_ARGS).
require "vagrant"
require Vagrant.source_root.join("plugins/provisioners/ansible/provisioner/host").to_s

root, data_dir, playbook = ARGV
env = Vagrant::Environment.new(cwd: root, local_data_path: data_dir, ui_class: Vagrant::UI::Basic)
name = env.vagrantfile.machine_names.last
config = env.vagrantfile.machine_config(name, :virtualbox, nil, nil, false)[:config]
config.finalize!
ansible = config.vm.provisioners.find { |p| p.type.to_s == "ansible" }
abort "no ansible provisioner on the last machine #{name}" unless ansible

settings = ansible.config
settings.playbook = playbook

ssh_info = {
  host: "127.0.0.1", port: 2222, username: "vagrant", keys_only: true, forward_agent: false,
  private_key_path: [File.join(data_dir, "machines", name.to_s, "virtualbox", "private_key")],
}
Machine = Struct.new(:name, :env, :ui, :provider_name, :ssh_info, :config, keyword_init: true)
machine = Machine.new(name: name, env: env, ui: env.ui, provider_name: :virtualbox,
                      ssh_info: ssh_info, config: config)

VagrantPlugins::Ansible::Provisioner::Host.new(machine, settings).provision
